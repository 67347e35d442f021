"""The augmentation benchmark command runs and reports both measures (speed is not asserted)."""

import json
import re

import pytest
import torch


@pytest.mark.parametrize("policy", ["basic", "trivialaugment"])
def test_bench_augment_prints_both_ratios(cli, policy):
    code, out, err = cli(
        "bench-augment",
        "--dataset",
        "digits",
        "--policy",
        policy,
        "--images",
        "256",
        "--steps",
        "2",
        "--threads",
        "1",
    )
    assert code == 0, err
    for measure in ("augmentation alone", "cnn training with augmentation"):
        assert re.search(rf"{measure}\s+[\d,]+\s+[\d,]+\s+[\d.]+x", out), out


def test_bench_augment_refuses_other_policies(cli):
    code, _, err = cli("bench-augment", "--policy", "mixup")
    assert code == 2 and "basic or trivialaugment" in err


def test_bench_augment_writes_its_figures_with_a_loader_in_worker_processes(cli, tmp_path):
    code, out, err = cli(
        "bench-augment",
        "--dataset",
        "digits",
        "--images",
        "256",
        "--steps",
        "2",
        "--threads",
        "1",
        "--loader-workers",
        "2",
        "--json",
        tmp_path / "figures.json",
    )
    assert code == 0, err
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["loader_workers"] == 2 and "2 worker(s)" in out
    for measure in ("augmentation", "training"):
        assert figures[measure]["ratio"] == pytest.approx(
            figures[measure]["ours"] / figures[measure]["reference"]
        )


def test_bench_augment_without_cuda_says_so(cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli("bench-augment", "--device", "cuda")
    assert code == 2 and "--device: cuda was asked for" in err
