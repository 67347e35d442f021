"""Cohorts against solo training on this device: model-steps/s of the training loop for K models
trained as one grouped network (K = 1 is a model alone), the share of the device's matrix rate
that makes (MFU), and what CUDA graphs (``torch.compile(mode="reduce-overhead")``) would add to a
bare cohort step. For tests/gpu/check.sh; on the CPU it rehearses with smaller figures.

    python tests/gpu/cohort_bench.py OUT.json [--sizes 1,8,32] [--models cnn,resnet] [--steps 100]

MFU counts the useful arithmetic: the FLOPs of one model's forward and backward pass at its batch
(``torch.utils.flop_counter.FlopCounterMode``) times the model-steps per second, over
PEAK_FLOPS, the bf16 matrix rate measured on the H200 we use.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.core.images import ImageSet
from bench.core.seeding import seeded
from bench.core.strategy import TrainingData
from bench.models.suite import CLASSIFIERS, GROUPABLE, build_classifier
from bench.run.resources import timed
from bench.training.cohort import grouped, per_member, seed_dropout, side_by_side
from bench.training.loop import Member, train_cohort

PEAK_FLOPS = 790e12  # bf16 dense matrix rate measured on the H200 (../shared/DESIGN.md)
SHAPE = (1, 28, 28)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _members(name: str, k: int) -> list[Member]:
    members = []
    for i in range(k):
        generator = torch.Generator().manual_seed(i)
        images = ImageSet(
            torch.randint(0, 256, (1000, *SHAPE), generator=generator, dtype=torch.uint8),
            torch.arange(1000) % 10,
        )
        with seeded(i, DEVICE):
            model = build_classifier(name, SHAPE, 10)
        members.append(Member(model, TrainingData(real=images), images.subset(torch.arange(64)), i, i))
    return members


def _loop_seconds(name: str, k: int, steps: int) -> float:
    recipe = CLASSIFIERS.get(name).recipe
    members = _members(name, k)
    return timed(
        lambda: train_cohort(members, recipe, steps=steps, num_classes=10, device=DEVICE, eval_points=1),
        DEVICE,
    )


def model_steps_per_second(name: str, k: int, steps: int) -> float:
    """K x the loop's steps/s for a cohort of K (from a short and a long run, after a warm-up)."""
    _loop_seconds(name, k, 3)
    short, long = _loop_seconds(name, k, steps // 5), _loop_seconds(name, k, steps + steps // 5)
    return k * steps / max(long - short, 1e-9)


def flops_per_model_step(name: str) -> float:
    """FLOPs of one forward and backward pass of one model at its recipe's batch."""
    batch = CLASSIFIERS.get(name).recipe.batch_size
    model = build_classifier(name, SHAPE, 10).to(DEVICE)
    x = torch.rand(batch, *SHAPE, device=DEVICE)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long, device=DEVICE)).backward()
    return float(counter.get_total_flops())


def bare_step_rates(name: str, k: int, steps: int, compile_it: bool) -> dict:
    """Steps/s of a bare cohort step (forward, backward, SGD update on one fixed batch) eager and,
    with ``compile_it``, under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs): the ceiling
    on what graphing the loop's step could give."""
    batch = CLASSIFIERS.get(name).recipe.batch_size
    with seeded(0, DEVICE):
        models = [build_classifier(name, SHAPE, 10) for _ in range(k)]
    net = (models[0] if k == 1 else grouped(models, GROUPABLE)).to(DEVICE).train()
    if k > 1:
        seed_dropout(net, list(range(k)))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = side_by_side([torch.rand(batch, *SHAPE, device=DEVICE) for _ in range(k)])
    y = torch.zeros(k, batch, dtype=torch.long, device=DEVICE)

    def step():
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=DEVICE.type == "cuda"):
            logits = per_member(net(x), k)
        loss = F.cross_entropy(logits.float().reshape(-1, 10), y.reshape(-1))
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()

    def rate(fn) -> float:
        for _ in range(5):
            fn()
        return steps / timed(lambda: [fn() for _ in range(steps)], DEVICE)

    rates = {"eager": rate(step)}
    if compile_it:
        start = time.perf_counter()
        compiled = torch.compile(step, mode="reduce-overhead")
        for _ in range(3):
            compiled()
        rates.update(compiled=rate(compiled), compile_seconds=time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--sizes", default="1,8,32" if DEVICE.type == "cuda" else "1,4")
    parser.add_argument("--models", default="cnn,resnet")
    parser.add_argument("--steps", type=int, default=60 if DEVICE.type == "cuda" else 10)
    parser.add_argument(
        "--compile",
        default="cnn" if DEVICE.type == "cuda" else "",
        help="models whose bare step is also timed under torch.compile (comma-separated)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    found: dict = {"device": str(DEVICE), "peak_flops": PEAK_FLOPS, "models": {}}
    for name in args.models.split(","):
        flops = flops_per_model_step(name)
        rates = {k: model_steps_per_second(name, k, args.steps) for k in sizes}
        figures = {
            "flops_per_model_step": flops,
            "model_steps_per_second": {str(k): round(v, 2) for k, v in rates.items()},
            "speedup_over_solo": {str(k): round(v / rates[sizes[0]], 2) for k, v in rates.items()},
            "mfu": {str(k): round(v * flops / PEAK_FLOPS, 5) for k, v in rates.items()},
        }
        figures["bare_step"] = {
            str(k): bare_step_rates(name, k, args.steps, name in args.compile.split(","))
            for k in (sizes[0], sizes[-1])
        }
        found["models"][name] = figures
        print(name, json.dumps(figures), flush=True)
    with open(args.out, "w") as handle:
        json.dump(found, handle, indent=1)


if __name__ == "__main__":
    main()
