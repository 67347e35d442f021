"""The CUDA paths: bf16 autocast training, generators on the device, the GPU's peak memory,
torch-fidelity on CUDA, several workers on one GPU. They skip without a GPU; tests/gpu/check.sh
runs them on a machine that has one."""

import pandas as pd
import pytest
import torch
from conftest import TINY_CONFIG
from tests_support import fast_params, tiny_config_with

from bench.core import FitContext
from bench.core.cache import FileCache
from bench.core.seeding import seeded
from bench.data.sets import DatasetEntry, load_dataset
from bench.data.splits import SplitSpec, make_split, train_pool
from bench.protocol.config import parse_config
from bench.quality.evaluator import evaluator, load_evaluator
from bench.quality.features import extract
from bench.quality.fidelity import fidelity
from bench.run.cell import cached_dataset, expand_grid
from bench.run.stages import run_cell
from bench.training.loop import predict
from strategies import STRATEGIES

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
RESULTS = ("test_accuracy", "test_nll", "train_accuracy", "val_accuracy", "curve")


def _cells(strategies, **changes):
    config = parse_config({**TINY_CONFIG, "strategies": strategies, "quality": {"enabled": False}, **changes})
    return expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})


def test_training_runs_in_bf16_autocast_on_cuda():
    cell = _cells(["none"], classifiers=["cnn"], seeds=1)[0]
    model = cell.classifier_entry.build((1, 8, 8), 10).to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model(torch.zeros(2, 1, 8, 8, device=CUDA)).dtype == torch.bfloat16
    assert predict(model, torch.zeros(3, 1, 8, 8, dtype=torch.uint8), CUDA).dtype == torch.float32


def test_a_cell_on_cuda_learns_as_on_the_cpu_and_records_gpu_memory():
    cell = _cells(["none"], classifiers=["cnn"], seeds=1, regimes=[20], budget={"scale": 0.3})[0]
    on_gpu, on_cpu = run_cell(cell, CUDA), run_cell(cell, CPU)
    assert on_gpu["status"] == "ok" and on_gpu["device"] == torch.cuda.get_device_name(CUDA)
    assert on_gpu["test_accuracy"] > max(0.5, on_cpu["test_accuracy"] - 0.1)
    total_mb = torch.cuda.get_device_properties(CUDA).total_memory / 2**20
    assert 0 < on_gpu["train_peak_mem_mb"] < total_mb  # the allocator's peak, not the host's RSS
    assert on_gpu["train_peak_mem_mb"] < on_cpu["train_peak_mem_mb"]


def test_identity_and_magnitude_zero_score_exactly_like_none_on_cuda():
    cells = _cells(
        [
            "none",
            "identity",
            {"name": "classical", "label": "basic-0", "params": {"policy": "basic", "magnitude": 0.0}},
        ]
    )
    records = {(c.strategy.label, c.classifier, c.replicate): run_cell(c, CUDA) for c in cells}
    for (label, classifier, replicate), record in records.items():
        baseline = records[("none", classifier, replicate)]
        for column in RESULTS:
            assert record[column] == baseline[column], (label, classifier, replicate, column)


def test_a_cell_on_cuda_is_reproducible():
    cell = _cells(
        [{"name": "classical", "label": "trivial", "params": {"policy": "trivialaugment+mixup"}}],
        classifiers=["resnet"],
        seeds=1,
    )[0]
    first, again = run_cell(cell, CUDA), run_cell(cell, CUDA)
    assert [first[c] for c in RESULTS] == [again[c] for c in RESULTS]


@pytest.mark.parametrize("name", ["gan", "vae"])
def test_generators_fit_and_sample_on_the_device(name, tmp_path, monkeypatch):
    monkeypatch.setattr("strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0)  # 20 steps is too few to judge
    labelled = make_split(load_dataset(DatasetEntry("digits")), 6, SplitSpec(val_per_class=5), 0).labelled
    cls = STRATEGIES.get(name)
    fits = []
    for k in range(2):  # two fits from the same seed, as run_cell seeds them
        ctx = FitContext(
            device=CUDA,
            seed=3,
            num_classes=10,
            hflip=False,
            cache_dir=tmp_path / str(k),
            cache_key_parts=("digits",),
        )
        with seeded(3, CUDA):
            fits.append(cls(**cls.resolve_params(fast_params(name), "test")).fit(labelled, ctx))
    synthetic = fits[0].synthetic
    assert synthetic.images.dtype == torch.uint8 and synthetic.images.device.type == "cpu"
    assert torch.equal(synthetic.images, fits[1].synthetic.images)  # equal seeds, equal samples on CUDA
    drawn = fits[0].sampler(30, torch.Generator(device=CUDA).manual_seed(0))  # the training loop's generator
    assert drawn.images.shape == (30, 1, 8, 8) and torch.bincount(drawn.labels.cpu()).tolist() == [3] * 10


def test_quality_metrics_on_cuda_match_the_cpu(tmp_path):
    dataset = load_dataset(DatasetEntry("digits"))
    judge = evaluator(dataset, make_split(dataset, 10, SplitSpec(), 0), CUDA, FileCache(tmp_path), 0.2)
    pool, test = train_pool(dataset, SplitSpec())
    first, second = pool.images[:400], test.images[:300]

    def metrics(device):
        net = load_evaluator(judge.weights, device)
        return fidelity(extract(net, first, device), extract(net, second, device))

    on_gpu, on_cpu = metrics(CUDA), metrics(CPU)
    for name in (
        "frechet_inception_distance",
        "kernel_inception_distance_mean",
        "inception_score_mean",
        "precision",
        "recall",
    ):
        assert on_gpu[name] == pytest.approx(on_cpu[name], rel=1e-2, abs=1e-4), name


def test_several_workers_share_one_gpu_and_agree_with_one(tmp_path, cli):
    tables = {}
    for workers in (1, 3):
        config = tiny_config_with(tmp_path, {"device": "cuda", "workers": workers}, name=f"tiny-{workers}")
        code, _, err = cli("run", config, "--out", tmp_path / f"run-{workers}")
        assert code == 0, err
        assert f"{workers} worker(s)" in err
        tables[workers] = pd.read_csv(tmp_path / f"run-{workers}" / "results.csv").sort_values("key")
    assert len(tables[3]) == len(tables[1]) == 8 and tables[3]["key"].is_unique
    assert (tables[3]["status"] == "ok").all()
    assert tables[3]["test_accuracy"].tolist() == tables[1]["test_accuracy"].tolist()
