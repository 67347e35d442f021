"""The split protocol: test / validation / labelled training subset, fixed by the split seed.

- test: the official test split, else a stratified hold-out fixed by ``split.seed``;
- val: ``val_per_class`` images per class from the training pool, fixed by ``split.seed``;
- labelled: ``n_per_class`` images per class (or all) drawn from the rest of the pool, with a
  draw per replicate (seed index), so that seeds also vary the labelled subset. The draw is the
  same for every strategy and classifier: it depends only on data set, split seed, regime, replicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.errors import UserError
from bench.core.images import ImageSet
from bench.core.schema import option
from bench.core.seeding import derive_seed
from bench.data.sets import Dataset


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    """The `split` section of a protocol."""

    seed: int = option(0, low=0, help="fixes the test hold-out and the validation set")
    val_per_class: int = option(50, low=1, help="validation images per class, taken from the training pool")
    test_fraction: float = option(
        0.3,
        low=0.05,
        high=0.9,
        help="share held out for testing where the data set has no official test split",
    )


@dataclass(frozen=True)
class Split:
    """A replicate's labelled, validation and test images, with the pool indices they came from."""

    labelled: ImageSet
    val: ImageSet
    test: ImageSet
    labelled_index: np.ndarray  # indices into the training pool, for provenance and tests
    val_index: np.ndarray
    spec: SplitSpec
    unlabelled_index: np.ndarray  # the rest of the pool: neither labelled nor validation (sorted)


@dataclass(frozen=True)
class LongTail:
    """A long-tailed regime (the CIFAR-10-LT convention): class i of K gets
    round(n_max * imbalance^(-i/(K-1))) labelled images, so class 0 has n_max and the last
    n_max / imbalance."""

    imbalance: float
    n_max: int

    def __str__(self) -> str:  # the regime's label in keys, rows and reports
        return f"lt{self.imbalance:g}x{self.n_max}"

    def counts(self, num_classes: int) -> list[int]:
        return [
            max(1, round(self.n_max * self.imbalance ** (-i / max(1, num_classes - 1))))
            for i in range(num_classes)
        ]


# A regime: images per class (int), every image of the pool as it is (None: `all`), or long-tailed.
Regime = int | None | LongTail


def regime_label(regime: Regime) -> str:
    """How keys, rows and reports name a regime: `all`, the images per class, or ``lt<imbalance>x<n_max>``."""
    return "all" if regime is None else str(regime)


def _stratified_take(
    labels: np.ndarray, per_class: Regime, rng: np.random.Generator, what: str
) -> np.ndarray:
    """Per class, a random ``per_class`` positions (all when None; by class for a long tail),
    returned sorted."""
    classes = np.unique(labels)
    wanted = per_class.counts(int(classes.max()) + 1) if isinstance(per_class, LongTail) else None
    taken = []
    for cls in classes:
        positions = np.flatnonzero(labels == cls)
        count = per_class if wanted is None else wanted[cls]
        if count is not None and count > len(positions):
            raise UserError(
                f"{what}={per_class} asks for {count} images of class {cls}, which has "
                f"{len(positions)} left; lower it"
            )
        taken.append(rng.permutation(positions)[:count])
    return np.sort(np.concatenate(taken))


def held_out(dataset: Dataset, spec: SplitSpec) -> np.ndarray:
    """Which of ``dataset.train``'s images are held out for testing (a boolean mask): a stratified
    share fixed by the split seed, or none where the data set has an official test split."""
    labels = dataset.train.labels.numpy()
    is_test = np.zeros(len(labels), dtype=bool)
    if dataset.test is not None:
        return is_test
    rng = np.random.default_rng(derive_seed("test", spec.seed))
    for cls in np.unique(labels):
        positions = rng.permutation(np.flatnonzero(labels == cls))
        is_test[positions[: int(round(len(positions) * spec.test_fraction))]] = True
    return is_test


def train_pool(dataset: Dataset, spec: SplitSpec) -> tuple[ImageSet, ImageSet]:
    """(training pool, test set): the official split, else a stratified hold-out."""
    if dataset.test is not None:
        return dataset.train, dataset.test
    is_test = held_out(dataset, spec)
    return dataset.train.subset(np.flatnonzero(~is_test)), dataset.train.subset(np.flatnonzero(is_test))


def make_split(dataset: Dataset, n_per_class: Regime, spec: SplitSpec, replicate: int) -> Split:
    """Split ``dataset`` for one regime (images per class; None = all; or a LongTail) and one
    replicate."""
    pool, test = train_pool(dataset, spec)
    labels = pool.labels.numpy()
    val_index = _stratified_take(
        labels,
        spec.val_per_class,
        np.random.default_rng(derive_seed("val", spec.seed)),
        "split.val_per_class",
    )
    rest = np.setdiff1d(np.arange(len(labels)), val_index)
    rng = np.random.default_rng(derive_seed("labelled", spec.seed, n_per_class, replicate))
    labelled_index = rest[_stratified_take(labels[rest], n_per_class, rng, "regimes")]
    unlabelled_index = np.setdiff1d(rest, labelled_index)
    return Split(
        pool.subset(labelled_index),
        pool.subset(val_index),
        test,
        labelled_index,
        val_index,
        spec,
        unlabelled_index,
    )
