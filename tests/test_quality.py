"""Quality metrics: features computed once, fidelity numbers from them equal to torch-fidelity's own
`calculate_metrics` and to independent computations."""

import numpy as np
import pytest
import torch
import torch_fidelity
from scipy import linalg
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from bench.core.cache import FileCache
from bench.data.sets import DatasetEntry, load_dataset
from bench.data.splits import SplitSpec, make_split, train_pool
from bench.quality.evaluator import evaluator, load_evaluator
from bench.quality.features import extract
from bench.quality.fidelity import FID, KID, fidelity, inception_fid_kid

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits_eval(tmp_path_factory):
    dataset = load_dataset(DatasetEntry("digits"))
    judge = evaluator(
        dataset,
        make_split(dataset, 10, SplitSpec(), 0),
        CPU,
        FileCache(tmp_path_factory.mktemp("cache")),
        0.2,
    )
    pool, test = train_pool(dataset, SplitSpec())
    return judge.weights, judge.test_accuracy, pool, test


def fidelity_metrics(first, second, weights, metrics=("fid", "kid", "isc", "prc")):
    net = load_evaluator(weights, CPU)
    return fidelity(extract(net, first, CPU), extract(net, second, CPU), metrics)


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
    ours = fidelity_metrics(first, second, weights, metrics=("fid",))[FID]
    net = load_evaluator(weights, CPU)
    a = extract(net, first, CPU).features.double().numpy()
    b = extract(net, second, CPU).features.double().numpy()
    reference = _scipy_fid(a, b)
    assert reference > 0
    assert abs(ours - reference) / reference < 1e-5


class _TorchFidelityEvaluator(FeatureExtractorBase):
    """Our evaluator as a torch-fidelity feature extractor, so that torch-fidelity's own
    ``calculate_metrics`` extracts the features and computes the metrics as it does them."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.net = load_evaluator(feature_extractor_weights_path, CPU)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        raise NotImplementedError

    def forward(self, images):
        found = dict(zip(("features", "logits"), self.net(images)))
        return tuple(found[name] for name in self.features_list)


class _Bare(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_metrics_from_features_computed_once_equal_torch_fidelitys_own(digits_eval):
    weights, _, pool, test = digits_eval
    if "test-augbench-evaluator" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("test-augbench-evaluator", _TorchFidelityEvaluator)
    first, second = pool.images[:300], test.images[:300]
    reference = torch_fidelity.calculate_metrics(
        input1=_Bare(first),
        input2=_Bare(second),
        cuda=False,
        feature_extractor="test-augbench-evaluator",
        feature_extractor_weights_path=str(weights),
        cache=False,
        verbose=False,
        save_cpu_ram=True,
        kid_subset_size=300,
        batch_size=256,
        fid=True,
        kid=True,
        isc=True,
        prc=True,
    )
    ours = fidelity_metrics(first, second, weights)
    assert set(ours) <= set(reference)
    for name, value in ours.items():
        assert value == reference[name], name  # the same arithmetic on the same features: equal, not close


def test_fid_of_a_set_with_itself_is_zero(digits_eval):
    weights, _, pool, _ = digits_eval
    fid = fidelity_metrics(pool.images[:300], pool.images[:300], weights, metrics=("fid",))[FID]
    assert abs(fid) < 1e-3


def test_kid_is_near_zero_for_one_distribution_and_not_for_noise(digits_eval):
    weights, _, pool, _ = digits_eval
    shuffled = pool.images[torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))]
    same = fidelity_metrics(shuffled[:400], shuffled[400:800], weights, metrics=("kid",))
    noise = torch.randint(
        0, 256, (400, *pool.images.shape[1:]), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    against_noise = fidelity_metrics(noise, shuffled[:400], weights, metrics=("kid",))
    kid_same, kid_noise = same[KID], against_noise[KID]
    assert kid_noise > 0.1
    assert abs(kid_same) < 0.01 * kid_noise


def test_inception_path_runs_with_given_weights(digits_eval, tmp_path, monkeypatch):
    """The standard Inception FID/KID path, with a weights file (random weights here: offline we have
    no real ones, so this checks the plumbing — gray to RGB, torch-fidelity's extractor — not values)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with monkeypatch.context() as patch:
        patch.setattr(torch, "load", lambda *a, **k: {})
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        skeleton = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path="x"
        )
    weights = tmp_path / "inception.pt"
    torch.save(skeleton.state_dict(), weights)
    _, _, pool, test = digits_eval
    found = inception_fid_kid(pool.images[:20], test.images[:20], CPU, str(weights))
    assert np.isfinite(found["fid_inception"]) and found["fid_inception"] >= 0
    assert np.isfinite(found["kid_inception"])


def test_evaluator_trains_without_the_labelled_images_where_the_regime_allows():
    from bench.quality.evaluator import evaluator_training_images

    dataset = load_dataset(DatasetEntry("digits"))
    pool, _ = train_pool(dataset, SplitSpec())
    split = make_split(dataset, 10, SplitSpec(), 0)
    images, disjoint = evaluator_training_images(pool, split)
    assert disjoint and len(images) == len(pool) - len(split.labelled)
    seen = {bytes(image.numpy()) for image in images.images}
    assert not any(bytes(image.numpy()) in seen for image in split.labelled.images)
    images, disjoint = evaluator_training_images(pool, make_split(dataset, None, SplitSpec(), 0))
    assert not disjoint and len(images) == len(pool)  # regime `all`: nothing else to train on


def test_quality_scores_what_the_classifier_trains_on_at_one_n(tmp_path):
    from bench.core.images import ImageSet
    from bench.core.strategy import TrainingData
    from bench.quality.assess import assess_quality
    from bench.quality.settings import QualitySpec
    from bench.training.augment import make_batch_transform

    dataset = load_dataset(DatasetEntry("digits"))
    split = make_split(dataset, 10, SplitSpec(), 0)
    cache, spec = FileCache(tmp_path / "cache"), QualitySpec(samples=500)

    def assess(data, samples_path=None):
        return assess_quality(data, dataset, split, spec, CPU, cache, 0.2, 1, samples_path)

    none = assess(TrainingData(real=split.labelled))
    assert none["quality_kind"] == "real" and "cas_accuracy" not in none
    assert none["quality_n"] == none["quality_n_test"] == none["quality_ref_n"] == 100  # n_real, not 500
    assert none["evaluator_disjoint"] and none["evaluator_label_agreement"] < 1.0
    classical = assess(
        TrainingData(real=split.labelled, batch_transform=make_batch_transform(("basic",), 0.5, False)),
        tmp_path / "samples" / "classical.npz",
    )
    assert classical["quality_kind"] == "augmented" and classical["quality_n"] == 100
    assert classical["fid_evaluator"] != none["fid_evaluator"]
    assert classical["fid_evaluator_ref_real"] == none["fid_evaluator_ref_real"]  # one floor at one N
    assert (
        classical["sample_grid"] == "samples/classical.npz"
        and (tmp_path / "samples" / "classical.npz").is_file()
    )
    # a 40-image synthetic pool
    pool = ImageSet(split.labelled.images[:40].flip(-1), split.labelled.labels[:40])
    generated = assess(TrainingData(real=split.labelled, synthetic=pool))
    assert (
        generated["quality_kind"] == "generated"
        and generated["quality_n"] == generated["quality_ref_n"] == 40
    )
    assert 0.0 <= generated["cas_accuracy"] <= 1.0 and generated["mem_near_copy_chance"] == 0.05
    # real pool images with a teacher's labels: a synthetic pool (CAS), but nothing generated to
    # memorize (they are real images, nearest to themselves)
    relabelled = assess(TrainingData(real=split.labelled, synthetic=pool, synthetic_kind="pseudo-labelled"))
    assert relabelled["quality_kind"] == "pseudo-labelled" and "cas_accuracy" in relabelled
    assert not any(name.startswith("mem_") for name in relabelled)


def test_a_handful_of_images_gives_no_fidelity_numbers_instead_of_an_error(digits_eval):
    from bench.quality.fidelity import MIN_IMAGES

    weights, _, pool, test = digits_eval
    found = fidelity_metrics(pool.images[:3], test.images[:3], weights)  # precision/recall would need > 3
    assert set(found) == {FID, KID, "inception_score_mean", "precision", "recall"}
    assert all(np.isnan(v) for v in found.values())
    assert all(
        np.isfinite(v)
        for v in fidelity_metrics(
            pool.images[:MIN_IMAGES], test.images[:MIN_IMAGES], weights, metrics=("fid", "kid")
        ).values()
    )
