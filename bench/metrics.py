"""Classification metrics computed from logits: accuracy, macro-F1, NLL, ECE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| * share."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.float().mean().item() * abs(correct[in_bin].mean().item()
                                                     - confidence[in_bin].mean().item())
    return ece


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """accuracy, macro_f1, nll and ece of CPU float logits (N, K) against int labels (N,)."""
    logits, labels = logits.float().cpu(), labels.cpu()
    predicted = logits.argmax(1)
    return {
        "accuracy": (predicted == labels).double().mean().item(),
        "macro_f1": float(f1_score(labels.numpy(), predicted.numpy(), average="macro")),
        "nll": F.cross_entropy(logits, labels).item(),
        "ece": expected_calibration_error(logits.softmax(1), labels),
    }
