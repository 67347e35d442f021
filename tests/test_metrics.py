"""Classification metrics against scikit-learn and by-hand values."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from bench.training.metrics import classification_metrics, expected_calibration_error


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_and_macro_f1_match_scikit_learn(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (200,), generator=generator)
    labels[labels == 5] = 4  # class 5 never occurs in the labels (it may still be predicted)
    logits = torch.randn(200, 6, generator=generator) + 2.0 * torch.nn.functional.one_hot(labels, 6)
    found = classification_metrics(logits, labels)
    predicted = logits.argmax(1).numpy()
    assert found["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels.numpy(), predicted), abs=1e-12
    )
    assert found["macro_f1"] == pytest.approx(f1_score(labels.numpy(), predicted, average="macro"), abs=1e-12)
    assert found["accuracy"] == pytest.approx(float(np.mean(predicted == labels.numpy())))


def test_ece_by_hand():
    # two samples, confidences 0.9 (right) and 0.6 (wrong): bins hold |1 - 0.9| and |0 - 0.6|, half each
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
