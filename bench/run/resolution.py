"""What a check can see. A group's check (a data set, regime, classifier and strategy) pairs each
checked seed's model with the same seed's at twice the budget, or with its generator fitted at twice
its steps, image by image on the validation images (``read_doubling``). The group's gain is the mean
over its checked seeds, and its *resolution* the gain the check had 80 % power to see
(``resolution_pp``). Converged: gain below ``budget.plateau`` and resolution at most the plateau;
rising: gain at or above it; unresolved: neither (``outcome``). Also the seeds a check starts with
and may add, and the refusal of a plateau that no check of the protocol could resolve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from bench.core.errors import UserError
from bench.data.sets import Dataset
from bench.protocol.config import BenchConfig
from bench.training.metrics import read_correct_bits

TRIPLE = ["dataset", "regime", "classifier"]  # the cells whose budget moves together
GROUP = [*TRIPLE, "strategy"]
CONVERGED, RISING, UNRESOLVED, UNCHECKED = "converged", "rising", "unresolved", "unchecked"
# a check's resolution: the gain a one-sided test at 5 % would see with 80 % power
Z_RESOLUTION = NormalDist().inv_cdf(0.95) + NormalDist().inv_cdf(0.80)
Z_RISING = NormalDist().inv_cdf(0.95)  # a gain this many standard errors above the plateau: clearly rising


@dataclass(frozen=True)
class Doubling:
    """What one seed's check read: the gain in validation accuracy from doubling (a fraction), the
    per-image variance of that gain, the validation images, and whether the two models were paired
    image by image (else the variance is that of two independent accuracies)."""

    gain: float
    variance: float
    n: int
    paired: bool


def read_doubling(base: dict, check: dict) -> Doubling:
    """The doubling of one seed, from its row and its check's row: paired on the same validation
    images where both carry ``val_correct`` (the per-image difference, McNemar-style), else unpaired."""
    n = int(base.get("n_val") or check.get("n_val") or 0)
    bits = base.get("val_correct"), check.get("val_correct")
    if n and all(isinstance(b, str) and b for b in bits):
        diff = read_correct_bits(bits[1], n).astype(float) - read_correct_bits(bits[0], n).astype(float)
        return Doubling(float(diff.mean()), float(diff.var(ddof=1)) if n > 1 else math.inf, n, True)
    p1, p2 = float(base["val_accuracy"]), float(check["val_accuracy"])
    variance = p1 * (1 - p1) + p2 * (1 - p2)
    return Doubling(p2 - p1, variance, max(n, 1), False)


def resolution_pp(doublings: list[Doubling], plateau: float) -> float:
    """The smallest mean gain (pp) the check had 80 % power to see with a one-sided test at 5 %,
    from the seeds' doublings pooled (their mean gain's standard error). Each seed's variance is at
    least that of a gain of ``plateau`` made by images turning right alone, p(1-p): a check whose
    two models happened to agree on every image still had to see a plateau-sized gain on n images."""
    if not doublings:
        return math.nan
    floor = _binary_variance(plateau / 100)
    total = sum(max(d.variance, floor) / d.n for d in doublings)
    return 100 * Z_RESOLUTION * math.sqrt(total) / len(doublings)


def best_resolution_pp(n_val: int, seeds: int, plateau: float) -> float:
    """The resolution of a check of ``seeds`` seeds on ``n_val`` images at its best: the two models
    of each seed differing only where the doubled one gained (no check of that size resolves finer)."""
    return resolution_pp([Doubling(0.0, 0.0, max(n_val, 1), True)] * seeds, plateau)


def _binary_variance(p: float) -> float:
    return p * (1 - p)


def outcome(gain_pp: float, resolution: float, plateau: float | None) -> str:
    """converged (gain below the plateau, read by a check that resolves the plateau), rising (gain at
    or above it), unresolved (neither: the check could not tell), unchecked (no check)."""
    if plateau is None or math.isnan(gain_pp):
        return UNCHECKED
    if gain_pp >= plateau:
        return RISING
    return CONVERGED if resolution <= plateau else UNRESOLVED


AUTO_CHECK_SEEDS = 16  # budget.max_check_seeds: auto; a check adds seeds up to this many


def check_replicates(n_val: int, plateau: float, seeds: int, asked: str = "auto") -> int:
    """How many first seeds a group's check trains at twice the budget (at most the protocol's):
    ``asked`` (budget.check_seeds), or with auto the fewest, at least 2, whose best resolution
    (``best_resolution_pp``) is at most the plateau."""
    if asked != "auto":
        return min(seeds, int(asked))
    wanted = 2
    while wanted < seeds and best_resolution_pp(n_val, wanted, plateau) > plateau:
        wanted += 1
    return min(seeds, wanted)


def first_check_seeds(config: BenchConfig, n_val: int) -> int:
    """The seeds each group's check starts with on a data set of ``n_val`` validation images."""
    budget = config.budget
    return check_replicates(n_val, budget.plateau, config.seeds, budget.check_seeds)


def checked_plateau(config: BenchConfig) -> float | None:
    """The plateau the checks read against (None: budget.check is off)."""
    return config.budget.plateau if config.budget.check == "on" else None


def max_check_seeds(config: BenchConfig, start: int) -> int:
    """The most seeds a group's check reads (budget.max_check_seeds), never fewer than it starts with."""
    asked = config.budget.max_check_seeds
    return max(start, AUTO_CHECK_SEEDS if asked == "auto" else int(asked))


def check_resolvable(config: BenchConfig, n_val: dict[str, int]) -> None:
    """Refuse a plateau that the check can never resolve on a data set's validation images, even with
    the most seeds it may read (budget.max_check_seeds) and two models that differ only where one
    gained, and a budget.max_check_seeds below the seeds a check starts with (UserError naming the
    field and what would do)."""
    budget = config.budget
    if budget.check == "off":
        return
    plateau = budget.plateau
    for title, n in n_val.items():
        start = first_check_seeds(config, n)
        if budget.max_check_seeds != "auto" and int(budget.max_check_seeds) < start:
            raise UserError(
                f"config field budget.max_check_seeds: {budget.max_check_seeds} is below the {start} seed(s) "
                f"each check starts with on {title} (budget.check_seeds: {budget.check_seeds}); give at "
                f"least {start} (as many: never add seeds)"
            )
        seeds = max_check_seeds(config, start)
        best = best_resolution_pp(n, seeds, plateau)
        if best > plateau:
            raise UserError(
                f"config field budget.plateau: {plateau:g} pp cannot be resolved on {title}'s {n} validation "
                f"images with {seeds} checked seed(s): at best the check sees gains of {best:.1f} pp. Raise "
                f"budget.plateau to at least {math.ceil(10 * best) / 10:g}, split.val_per_class to at least "
                f"{_val_per_class_for(n, seeds, plateau, config)}, or the seeds checked "
                "(budget.max_check_seeds), or set budget.check: off (the leaderboard refuses unchecked runs)"
            )


def resolution_note(config: BenchConfig, n_val: dict[str, int]) -> str:
    """What a protocol's budget check can resolve at best, per data set (``n_val``: its validation
    images), in words: checked seeds, images, best resolution and the plateau."""
    if config.budget.check == "off":
        return "budget check off"
    plateau, parts = config.budget.plateau, []
    for title, n in n_val.items():
        seeds = first_check_seeds(config, n)
        best = best_resolution_pp(n, seeds, plateau)
        most = max_check_seeds(config, seeds)
        added = f" (up to {most} where that first read does not resolve it)" if most > seeds else ""
        parts.append(
            f"{title}: {seeds} checked seed(s) on {n} validation images resolve {best:.1f} pp at best{added}"
        )
    return f"plateau {plateau:g} pp; " + "; ".join(parts)


def _val_per_class_for(n: int, seeds: int, plateau: float, config: BenchConfig) -> int:
    """The validation images per class at which the best check of ``seeds`` seeds resolves ``plateau``."""
    per_class = config.split.val_per_class
    classes = max(1, n // max(1, per_class))
    while best_resolution_pp(per_class * classes, seeds, plateau) > plateau:
        per_class += 1
    return per_class


def validation_sizes(config: BenchConfig, datasets: dict[str, Dataset]) -> dict[str, int]:
    """The validation images of each data set (the same for every regime and seed)."""
    return {title: config.split.val_per_class * dataset.num_classes for title, dataset in datasets.items()}
