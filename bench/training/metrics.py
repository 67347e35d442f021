"""Classification metrics computed from logits: accuracy, balanced accuracy, macro-F1, NLL, ECE,
per-class recall, and which images were right (``correct_bits``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| * share."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.float().mean().item() * abs(
                correct[in_bin].mean().item() - confidence[in_bin].mean().item()
            )
    return ece


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (K, K): row = true class, column = predicted class."""
    return torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).view(
        num_classes, num_classes
    )


def balanced_accuracy(confusion: torch.Tensor) -> float:
    """Mean recall over the classes present in the labels (as scikit-learn's balanced_accuracy_score)."""
    support = confusion.sum(1)
    present = support > 0
    return (confusion.diag()[present].double() / support[present]).mean().item()


def class_recall(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Recall of each class (NaN for a class absent from the labels)."""
    confusion = confusion_matrix(logits.argmax(1).cpu(), labels.cpu(), logits.shape[1]).double()
    return (confusion.diag() / confusion.sum(1)).tolist()


def smallest_third(counts: list[int]) -> list[int]:
    """The ceil(K/3) classes with the fewest training images (ties: the lower class index)."""
    order = sorted(range(len(counts)), key=lambda k: (counts[k], k))
    return sorted(order[: -(-len(counts) // 3)])


def macro_f1(confusion: torch.Tensor) -> float:
    """Unweighted mean F1 over the classes present in labels or predictions (F1 = 0 where a class
    has no true positive), as scikit-learn's f1_score(average="macro")."""
    tp = confusion.diag().double()
    support, predicted = confusion.sum(1).double(), confusion.sum(0).double()
    present = (support + predicted) > 0
    return (2 * tp[present] / (support[present] + predicted[present])).mean().item()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """accuracy, balanced_accuracy, macro_f1, nll and ece of CPU float logits (N, K) against int
    labels (N,)."""
    logits, labels = logits.float().cpu(), labels.cpu()
    predicted = logits.argmax(1)
    confusion = confusion_matrix(predicted, labels, logits.shape[1])
    return {
        "accuracy": (predicted == labels).double().mean().item(),
        "balanced_accuracy": balanced_accuracy(confusion),
        "macro_f1": macro_f1(confusion),
        "nll": F.cross_entropy(logits, labels).item(),
        "ece": expected_calibration_error(logits.softmax(1), labels),
    }


def correct_bits(logits: torch.Tensor, labels: torch.Tensor) -> str:
    """Which images a model got right, as hex (bit i of the packed bytes, most significant first:
    image i): two models scored on the same images can then be paired image by image."""
    correct = (logits.float().cpu().argmax(1) == labels.cpu()).numpy()
    return np.packbits(correct).tobytes().hex()


def read_correct_bits(text: str, n: int) -> np.ndarray:
    """``correct_bits`` back as n booleans."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)
