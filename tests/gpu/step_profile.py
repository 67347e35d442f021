"""Where a training step's time goes on a GPU: steps/s of each classifier in the training loop
(deterministic kernels on and off), the host syncs a step makes, the top operators of a step, and
the batch transforms' rate. Diagnostic, for tests/gpu/check.sh and for whoever tunes the loop.

    python tests/gpu/step_profile.py OUT.json
"""

from __future__ import annotations

import json
import sys
import warnings

import torch

from bench.core.images import ImageSet
from bench.core.seeding import seeded
from bench.core.strategy import TrainingData
from bench.models.suite import CLASSIFIERS, build_classifier
from bench.run.resources import timed
from bench.training.augment import make_batch_transform, parse_policy
from bench.training.loop import train

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPE = (1, 28, 28)


def _images(n: int = 1000) -> ImageSet:
    return ImageSet(torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8), torch.arange(n) % 10)


def _train(name: str, steps: int, transform=None) -> float:
    images = _images()
    data = TrainingData(real=images, batch_transform=transform)
    with seeded(0, DEVICE):
        model = build_classifier(name, SHAPE, 10)
        return timed(
            lambda: train(
                model,
                CLASSIFIERS.get(name).recipe,
                data,
                images.subset(torch.arange(64)),
                steps=steps,
                num_classes=10,
                device=DEVICE,
                order_seed=0,
                augment_seed=0,
                eval_points=1,
            ),
            DEVICE,
        )


def steps_per_second(name: str, transform=None) -> float:
    _train(name, 5, transform)
    return 200 / (_train(name, 220, transform) - _train(name, 20, transform))


def host_syncs(name: str, transform=None) -> list[str]:
    """Where the loop waits on the device: the warnings of CUDA's sync debug mode, by location."""
    if DEVICE.type != "cuda":
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _train(name, 20, transform)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    counts: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            where = f"{w.filename.split('/')[-1]}:{w.lineno}"
            counts[where] = counts.get(where, 0) + 1
    return [f"{where} x{count}" for where, count in sorted(counts.items(), key=lambda kv: -kv[1])]


def top_operators(name: str) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    _train(name, 5)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _train(name, 30)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return table.splitlines()


def transform_rate(policy: str, batch: int) -> float:
    transform = make_batch_transform(parse_policy(policy), 0.5, True)
    x = torch.rand(batch, *SHAPE, device=DEVICE)
    y = torch.zeros(batch, 10, device=DEVICE)
    generator = torch.Generator(device=DEVICE).manual_seed(0)

    def run(count: int) -> None:
        for _ in range(count):
            transform(x, y, generator)

    run(3)
    return 50 * batch / timed(lambda: run(50), DEVICE)


def main(path: str) -> None:
    found: dict = {"device": str(DEVICE), "steps_per_second": {}, "host_syncs": {}, "transform_img_per_s": {}}
    basic = make_batch_transform(parse_policy("basic"), 0.5, True)
    for name in ("mlp", "cnn", "resnet"):
        found["steps_per_second"][name] = steps_per_second(name)
    found["steps_per_second"]["cnn+basic"] = steps_per_second("cnn", basic)
    found["host_syncs"]["cnn"] = host_syncs("cnn")
    found["host_syncs"]["cnn+trivialaugment"] = host_syncs(
        "cnn", make_batch_transform(parse_policy("trivialaugment"), 0.5, True)
    )
    if DEVICE.type == "cuda":  # the cost of deterministic kernels
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
        found["steps_per_second_nondeterministic"] = {
            name: 200 / (_train(name, 220) - _train(name, 20)) for name in ("mlp", "cnn")
        }
    for policy in ("basic", "trivialaugment", "randaugment", "mixup"):
        for batch in (128, 4096):
            found["transform_img_per_s"][f"{policy}@{batch}"] = transform_rate(policy, batch)
    found["top_operators_mlp"] = top_operators("mlp")
    with open(path, "w") as handle:
        json.dump(found, handle, indent=1)
    print(json.dumps({k: v for k, v in found.items() if k != "top_operators_mlp"}, indent=1))
    print("\n".join(found["top_operators_mlp"]))


if __name__ == "__main__":
    main(sys.argv[1])
