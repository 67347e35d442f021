"""Quality metrics: our FID/KID through torch-fidelity against independent computations."""
import numpy as np
import pytest
import torch
from scipy import linalg

from bench.cache import FileCache
from bench.data import DatasetSpec, load_dataset
from bench.quality import EVALUATOR, evaluator, evaluator_outputs, fidelity_metrics, load_evaluator
from bench.splits import SplitSpec, train_pool

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits_eval(tmp_path_factory):
    dataset = load_dataset(DatasetSpec("digits"))
    weights, accuracy = evaluator(dataset, SplitSpec(), CPU, FileCache(tmp_path_factory.mktemp("cache")), 0.2)
    pool, test = train_pool(dataset, SplitSpec())
    return weights, accuracy, pool, test


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_evaluator_learns_the_data(digits_eval):
    _, accuracy, _, _ = digits_eval
    assert accuracy > 0.8


def test_fid_matches_an_independent_scipy_computation(digits_eval):
    weights, _, pool, test = digits_eval
    first, second = pool.images[:400], test.images[:400]
    ours = fidelity_metrics(first, second, CPU, EVALUATOR, str(weights), metrics=("fid",))["frechet_inception_distance"]
    net = load_evaluator(weights, CPU)
    a = evaluator_outputs(net, first, CPU)[0].double().numpy()
    b = evaluator_outputs(net, second, CPU)[0].double().numpy()
    reference = _scipy_fid(a, b)
    assert reference > 0
    assert abs(ours - reference) / reference < 1e-5


def test_fid_of_a_set_with_itself_is_zero(digits_eval):
    weights, _, pool, _ = digits_eval
    fid = fidelity_metrics(pool.images[:300], pool.images[:300], CPU, EVALUATOR, str(weights),
                           metrics=("fid",))["frechet_inception_distance"]
    assert abs(fid) < 1e-3


def test_kid_is_near_zero_for_one_distribution_and_not_for_noise(digits_eval):
    weights, _, pool, _ = digits_eval
    shuffled = pool.images[torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))]
    same = fidelity_metrics(shuffled[:400], shuffled[400:800], CPU, EVALUATOR, str(weights), metrics=("kid",))
    noise = torch.randint(0, 256, (400, *pool.images.shape[1:]), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    against_noise = fidelity_metrics(noise, shuffled[:400], CPU, EVALUATOR, str(weights), metrics=("kid",))
    kid_same = same["kernel_inception_distance_mean"]
    kid_noise = against_noise["kernel_inception_distance_mean"]
    assert kid_noise > 0.1
    assert abs(kid_same) < 0.01 * kid_noise


def test_inception_path_runs_with_given_weights(digits_eval, tmp_path, monkeypatch):
    """The standard Inception FID/KID path, with a weights file (random weights here: offline we have
    no real ones, so this checks the plumbing — gray to RGB, torch-fidelity's extractor — not values)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with monkeypatch.context() as patch:
        patch.setattr(torch, "load", lambda *a, **k: {})
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        skeleton = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
    weights = tmp_path / "inception.pt"
    torch.save(skeleton.state_dict(), weights)
    _, _, pool, test = digits_eval
    found = fidelity_metrics(pool.images[:20], test.images[:20], CPU, "inception-v3-compat", str(weights),
                             metrics=("fid", "kid"))
    assert np.isfinite(found["frechet_inception_distance"]) and found["frechet_inception_distance"] >= 0
    assert np.isfinite(found["kernel_inception_distance_mean"])
