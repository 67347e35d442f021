"""`augbench plan`: what a protocol still has to do and about how long it will take, before it runs.

The estimate adds up calibrated costs: seconds per training step of each classifier as a function
of the images in its batch, per batch of each classical policy, per step of each generator, per
evaluator step and per image of the quality metrics, each measured for a few dozen steps on the
device (random images of the data set's shape) and cached per device. Wall time follows the
critical path: the cells are handed to the workers in grid order as they free up, the first cell
that needs a generator, an evaluator or a quality row computes it, and a cell that needs one being
computed elsewhere waits for it (as the cache's locks make it), so that one long generator fit or
a cell at the end of the grid lengthens the run as it does in fact.
"""

from __future__ import annotations

import heapq
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bench.core.cache import FileCache
from bench.core.files import atomic_write, user_cache_dir
from bench.core.images import ImageSet, UnlabelledImages
from bench.core.keys import stable_hash
from bench.core.seeding import seeded
from bench.core.strategy import FitContext, TrainingData
from bench.data.sets import Dataset
from bench.data.splits import make_split, train_pool
from bench.data.unlabelled import unlabelled_images
from bench.execution.local import torch_threads
from bench.models.suite import ClassifierEntry, Recipe, build_classifier
from bench.quality.assess import QualityWork, evaluator_work, scored_count, strategy_work
from bench.quality.evaluator import EvaluatorNet, evaluator_training_images
from bench.quality.features import extract
from bench.quality.fidelity import fidelity
from bench.run import provenance
from bench.run.cell import Cell, cached_dataset, cells_of, make_strategy, work_items
from bench.run.resources import measure, timed
from bench.run.stages import training_group
from bench.training.loop import Member, predict, train_cohort
from strategies.classical import Classical
from strategies.teacher import TEACHER, teacher_key, teacher_steps

CALIBRATION_VERSION = "3"  # 2: generators' sampling time too; 3: quality per image of features computed once
EVALUATOR_NET = ClassifierEntry("cnn", "cnn")  # the quality evaluator is the suite's cnn
TEACHER_NET = ClassifierEntry(TEACHER, TEACHER)  # so is pseudo-label's teacher
CALIBRATION_IMAGES = 512  # random images a calibration trains on (the cost per step does not depend on them)


def calibration_file() -> Path:
    """Where calibrations are cached: $AUGBENCH_CACHE, else ~/.cache/augbench."""
    return user_cache_dir() / "calibration.json"


def _random_images(shape: tuple[int, ...], num_classes: int, n: int = CALIBRATION_IMAGES) -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    return ImageSet(
        torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8),
        torch.arange(n) % num_classes,
    )


def per_step(run: Callable[[int], None], device: torch.device, steps: int = 10) -> dict:
    """Seconds per step of ``run(k)`` (k steps), from runs of k and 3k steps after a warm-up, and
    the peak memory of the longer run."""
    run(3)
    short = timed(lambda: run(steps), device)
    with measure(device) as usage:
        long = timed(lambda: run(3 * steps), device)
    return {"step_s": max(0.0, (long - short) / (2 * steps)), "peak_mem_mb": usage.peak_mb}


class NotCalibrated(Exception):
    """A cost the cached calibration does not hold, asked of a calibration that may not measure."""


class Calibration:
    """Measured costs on one device, cached in a JSON file across runs. With ``measure=False`` it
    only reads the cache (a missing cost raises NotCalibrated): what ``run`` uses, so that a run
    never trains a calibration model."""

    def __init__(
        self, device: torch.device, path: Path | None = None, measure: bool = True, precision: str = ""
    ):
        self.device, self.path, self.may_measure = device, path or calibration_file(), measure
        self.precision = precision or None  # the classifiers' (key_precision; None: the device's default)
        self.where = [
            provenance.device_name(device),
            torch.__version__,
            torch.get_num_threads(),
            CALIBRATION_VERSION,
            *([precision] if precision else []),
        ]
        try:
            self.known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.measured = 0

    def cost(self, what: list, measure_it: Callable[[], dict]) -> dict:
        key = stable_hash([*self.where, *what], 20)
        if key not in self.known and not self.may_measure:
            raise NotCalibrated(what[0])
        if key not in self.known:
            self.known[key] = {"what": [str(w) for w in what], **measure_it()}
            self.measured += 1
            try:
                atomic_write(self.path, json.dumps(self.known, indent=1))
            except OSError:
                pass  # a read-only home: the calibration is simply not kept
        return self.known[key]

    def _training(
        self, entry: ClassifierEntry, shape: tuple, num_classes: int, synthetic: bool, size: int
    ) -> tuple[ImageSet, Callable[[int], None]]:
        """Random images, and what trains ``size`` classifiers on them (as one cohort) for k steps."""
        images = _random_images(shape, num_classes)
        data = TrainingData(real=images, synthetic=images if synthetic else None)
        val = images.subset(torch.arange(32))

        def run(steps: int) -> None:
            with seeded(0, self.device):
                members = [Member(entry.build(shape, num_classes), data, val, i, i) for i in range(size)]
                train_cohort(
                    members,
                    entry.training_recipe,
                    steps=steps,
                    num_classes=num_classes,
                    device=self.device,
                    eval_points=1,
                    precision=self.precision,
                )

        return images, run

    def classifier(self, entry: ClassifierEntry, shape: tuple, num_classes: int, synthetic: bool) -> dict:
        """Seconds per training step of one classifier and per predicted image."""
        device = self.device
        images, run = self._training(entry, shape, num_classes, synthetic, 1)

        def predict_s() -> float:
            model = entry.build(shape, num_classes).to(device)
            predict(model, images.images, device, precision=self.precision)
            return timed(
                lambda: predict(model, images.images, device, precision=self.precision), device
            ) / len(images)

        return self.cost(
            [
                "classifier",
                entry.versions(),
                entry.label,
                shape,
                num_classes,
                entry.training_recipe,
                synthetic,
            ],
            lambda: {**per_step(run, device), "predict_s_per_image": predict_s()},
        )

    def cohort(
        self, entry: ClassifierEntry, shape: tuple, num_classes: int, synthetic: bool, size: int
    ) -> dict:
        """Seconds per step of ``size`` classifiers trained as one grouped network (a cohort)."""
        _, run = self._training(entry, shape, num_classes, synthetic, size)
        return self.cost(
            [
                "cohort",
                entry.versions(),
                entry.label,
                shape,
                num_classes,
                entry.training_recipe,
                synthetic,
                size,
            ],
            lambda: per_step(run, self.device),
        )

    def transform(self, policy: str, magnitude: float, hflip: bool, shape: tuple, batch: int) -> dict:
        transform = Classical(policy=policy, magnitude=magnitude).batch_transform(hflip)
        if transform is None:
            return {"step_s": 0.0}
        x = torch.rand(batch, *shape, device=self.device)
        y = torch.zeros(batch, 10, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(0)

        def run(steps: int) -> None:
            for _ in range(steps):
                transform(x, y, generator)

        return self.cost(
            ["transform", policy, magnitude, hflip, shape, batch], lambda: per_step(run, self.device)
        )

    def generator(self, strategy, shape: tuple, num_classes: int, stacked: int = 1) -> dict:
        """Seconds per step of a generator's fit (of ``stacked`` fits as one stacked model) and
        per sampled image."""
        device = self.device
        images = _random_images(shape, num_classes)
        # for a generator that learns from a pool
        ctx = FitContext(
            device=device,
            seed=0,
            num_classes=num_classes,
            hflip=False,
            unlabelled=UnlabelledImages(images.images),
        )

        def run(steps: int) -> None:
            with seeded(0, device):  # a diverging fit's steps still took their time
                models = [strategy.build(shape, num_classes).to(device).train() for _ in range(stacked)]
                strategy.train_generators(
                    models,
                    [images] * stacked,
                    [ctx] * stacked,
                    steps,
                    [torch.Generator(device=device).manual_seed(i) for i in range(stacked)],
                )

        def sampling() -> dict:
            with seeded(0, device):
                model = strategy.build(shape, num_classes).to(device).eval()
            labels = torch.arange(CALIBRATION_IMAGES) % num_classes
            seconds = timed(
                lambda: strategy.sample(
                    model, labels, images, ctx, torch.Generator(device=device).manual_seed(0)
                ),
                device,
            )
            return {"sample_s_per_image": seconds / CALIBRATION_IMAGES}

        return self.cost(
            [
                "generator",
                strategy.name,
                strategy.versions(strategy.values),
                strategy.step_cost_params(),
                shape,
                num_classes,
                *(["cohort", stacked] if stacked > 1 else []),  # "cohort": kept, so cached calibrations hold
            ],
            lambda: {**per_step(run, device, steps=5), **sampling()},
        )

    def worker_start(self) -> dict:
        """Seconds a fresh Python takes to import the runner (torch and all), as a spawned worker does."""

        def run() -> dict:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import bench.run.tasks"], check=True, capture_output=True)
            return {"seconds": time.perf_counter() - start}

        return self.cost(["worker start", sys.executable], run)

    def quality(self, shape: tuple, num_classes: int, samples: int) -> dict:
        """Seconds per image of the quality stage's feature pass and metrics (FID/KID/IS/PRC), at
        up to 2000 images a side."""
        n = min(samples, 2000)

        def run() -> dict:
            with tempfile.TemporaryDirectory() as folder:
                weights = Path(folder) / "evaluator.pt"
                torch.save(
                    {
                        "model": build_classifier("cnn", shape, num_classes).state_dict(),
                        "shape": torch.tensor(shape),
                        "num_classes": torch.tensor(num_classes),
                    },
                    weights,
                )
                net = EvaluatorNet(weights).to(self.device).eval()
                images = _random_images(shape, num_classes, n).images
                seconds = timed(
                    lambda: fidelity(
                        extract(net, images, self.device), extract(net, images.flip(0), self.device)
                    ),
                    self.device,
                )
            return {"s_per_image": seconds / (2 * n)}

        return self.cost(["quality", shape, num_classes, n], run)

    def quality_seconds(self, work: QualityWork, shape: tuple, num_classes: int, samples: int) -> float:
        """Seconds of a piece of the quality stage, from the work it declares."""
        cnn_step = self.classifier(EVALUATOR_NET, shape, num_classes, synthetic=False)["step_s"]
        per_image = self.quality(shape, num_classes, samples)["s_per_image"]
        return work.cnn_steps * cnn_step + work.feature_images * per_image


@dataclass
class Plan:
    """Work still to do (after resume) and its estimated cost."""

    config: str
    device: str
    workers: int
    cells: int
    cells_todo: int
    generator_fits: int
    quality_jobs: int
    evaluators: int
    seconds: dict[str, float] = field(default_factory=dict)  # serial seconds by kind of work
    startup_seconds: float = 0.0  # a worker's start: imports and loading the data, once per run
    peak_mem_mb: float = 0.0  # per worker
    schedule_seconds: float = 0.0  # the workers' makespan on the critical path (see CellWork)
    worst_case: str = ""  # what the run costs if every raisable budget is raised (bench/run/rounds.py)
    generator_doubling: str = ""  # what doubling every generator's steps would cost (never done by a run)

    @property
    def wall_seconds(self) -> float:
        if not self.cells_todo:
            return 0.0
        return self.startup_seconds + max(
            self.schedule_seconds, sum(self.seconds.values()) / max(1, self.workers)
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "wall_seconds": self.wall_seconds}

    def headline(self) -> str:
        return f"estimated {format_duration(self.wall_seconds)} with {self.workers} worker(s)"

    def describe(self) -> str:
        parts = ", ".join(f"{kind} {format_duration(s)}" for kind, s in self.seconds.items())
        return "\n".join(
            [
                f"augbench plan: {self.config} on {self.device}, {self.workers} worker(s)",
                f"  to do: {self.cells_todo} of {self.cells} cells, {self.generator_fits} generator fit(s), "
                f"{self.quality_jobs} quality job(s) with {self.evaluators} evaluator(s)",
                f"  {self.headline()} (start {format_duration(self.startup_seconds)}, then serial: {parts}; "
                "shared evenly it would take "
                f"{format_duration(sum(self.seconds.values()) / max(1, self.workers))})",
                f"  peak memory: about {self.peak_mem_mb:,.0f} MB per worker "
                f"({'GPU allocator' if 'cpu' not in self.device else 'resident set'})",
                *([f"  {self.worst_case}"] if self.worst_case else []),
                *([f"  {self.generator_doubling}"] if self.generator_doubling else []),
                "  (calibrated on this device, cached in "
                f"{calibration_file()}; the workers take the cells in grid order, and wait for a generator, "
                "evaluator or quality row that another cell is computing)",
            ]
        )


@dataclass
class CellWork:
    """What one work item (a cell, or a cohort of cells) costs: its own training and evaluation,
    and the shared pieces it needs first (generator fit, evaluator, quality row), each by its
    group key with its seconds."""

    train_seconds: float
    needs: list[tuple[str, float]] = field(default_factory=list)


def schedule_seconds(work: list[CellWork], workers: int) -> float:
    """The makespan of ``work`` on ``workers``: each cell starts on the first free worker in order,
    computes each shared piece no cell has started yet, waits for those another cell is computing
    or has computed, then trains."""
    free = [0.0] * max(1, workers)
    ready_at: dict[str, float] = {}  # shared piece -> when it is computed
    end = 0.0
    for cell in work:
        now = heapq.heappop(free)
        for key, seconds in cell.needs:
            if key in ready_at:
                now = max(now, ready_at[key])
            else:
                now += seconds
                ready_at[key] = now
        now += cell.train_seconds
        end = max(end, now)
        heapq.heappush(free, now)
    return end


def format_duration(seconds: float) -> str:
    """Seconds as s, min or h, whichever reads best."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _split_sizes(dataset: Dataset, cell: Cell) -> tuple[int, int, int, int, int]:
    """(labelled, validation, test, evaluator training, unlabelled) image counts of the cell's regime."""
    split = make_split(dataset, cell.regime, cell.split, 0)
    pool, _ = train_pool(dataset, cell.split)
    unlabelled = unlabelled_images(cell.protocol.unlabelled, dataset, split, 0)
    return (
        len(split.labelled),
        len(split.val),
        len(split.test),
        len(evaluator_training_images(pool, split)[0]),
        0 if unlabelled is None else len(unlabelled),
    )


def make_plan(
    config,
    cells: list[Cell],
    done: set[str],
    cache_dir: Path,
    device: torch.device,
    workers: int,
    data_seconds: float = 0.0,
    calibrate: bool = True,
) -> Plan:
    """The work of ``cells`` not in ``done`` and its cost, calibrated on ``device``;
    ``data_seconds``: how long loading the data took (each worker loads it once). With
    ``calibrate=False`` only cached costs are used (NotCalibrated where one is missing)."""
    with torch_threads(1 if device.type == "cpu" else None):  # as the workers run
        calibration = Calibration(device, measure=calibrate, precision=cells[0].precision if cells else "")
        found = _make_plan(config, cells, done, cache_dir, calibration, workers)
    found.startup_seconds = calibration.worker_start()["seconds"] + data_seconds
    return found


def _make_plan(config, cells, done, cache_dir, calibration: Calibration, workers) -> Plan:
    """The plan of the work items (cells, and cohorts of cells) that hold a cell not in ``done``,
    in the order ``run`` hands them out (a cohort with a finished cell runs whole again)."""
    todo = [c for c in cells if c.key not in done]
    planner = _Planner(config, FileCache(cache_dir), calibration)
    work = [planner.item_work(cells_of(item)) for item in work_items(cells, {c.key for c in todo})]
    return Plan(
        config=config.name,
        device=provenance.device_name(calibration.device),
        workers=workers,
        cells=len(cells),
        cells_todo=len(todo),
        generator_fits=len(planner.fits),
        quality_jobs=len(planner.quality_jobs),
        evaluators=len(planner.evaluators),
        seconds=dict(planner.seconds),
        peak_mem_mb=planner.peak,
        schedule_seconds=schedule_seconds(work, workers),
    )


class _Planner:
    """Adds up the costs of work items as they come, counting each shared piece (a generator fit
    or stacked fit, an evaluator, a quality row) once, where the first item needs it."""

    def __init__(self, config, cache: FileCache, calibration: Calibration):
        self.config, self.cache, self.calibration = config, cache, calibration
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak = 0.0
        self.fits: set[str] = set()
        self.fitted_stacks: set[str] = set()
        self.teachers: set[str] = set()
        self.quality_jobs: set = set()
        self.evaluators: set = set()
        self.sizes: dict = {}

    def item_work(self, cells: tuple[Cell, ...]) -> CellWork:
        """A cell's work, or a cohort's: each member's fit and shared pieces in turn, then their
        classifiers trained together in groups of one batch shape (as ``run_cohort`` does)."""
        item = CellWork(0.0)
        self.seconds.setdefault("training", 0.0)
        # the members' solo step seconds by what they share when they train as one (``training_group``)
        groups: dict[tuple, list[float]] = defaultdict(list)
        steps = 0
        for cell in cells:
            step, steps, group, evaluated = self._cell(cell, item)
            groups[group].append(step)
            item.train_seconds += evaluated
        first = cells[0]
        dataset = cached_dataset(first.dataset)
        for ((_, synthetic_per_step), _, _), solo_steps in groups.items():
            size = len(solo_steps)
            if size == 1:
                train = solo_steps[0]
            else:  # from the launch-bound one-model step towards the measured cohort of the protocol's size
                alone = self.calibration.classifier(
                    first.classifier_entry,
                    tuple(dataset.image_shape),
                    dataset.num_classes,
                    synthetic=bool(synthetic_per_step),
                )["step_s"]
                full = self.calibration.cohort(
                    first.classifier_entry,
                    tuple(dataset.image_shape),
                    dataset.num_classes,
                    bool(synthetic_per_step),
                    first.cohort_size,
                )
                self.peak = max(self.peak, full["peak_mem_mb"])
                grouped = alone + (full["step_s"] - alone) * (size - 1) / max(1, first.cohort_size - 1)
                train = grouped + sum(solo_steps) - size * alone  # the members' transforms run one by one
            item.train_seconds += steps * train
        self.seconds["training"] += item.train_seconds
        return item

    def _cell(self, cell: Cell, item: CellWork) -> tuple[float, int, tuple, float]:
        """One cell's solo step seconds, steps, training group (``training_group``) and evaluation
        seconds; its shared pieces join ``item``'s needs."""
        calibration = self.calibration
        dataset = cached_dataset(cell.dataset)
        shape, k = tuple(dataset.image_shape), dataset.num_classes
        if (cell.dataset, cell.regime) not in self.sizes:
            self.sizes[(cell.dataset, cell.regime)] = _split_sizes(dataset, cell)
        n_real, n_val, n_test, n_pool, n_unlabelled = self.sizes[(cell.dataset, cell.regime)]
        strategy = make_strategy(cell.strategy)
        generative = strategy.generative_part()
        recipe: Recipe = cell.classifier_entry.training_recipe
        n_synthetic = strategy.synthetic_count(n_real)  # as its fit makes them
        objective = strategy.objective_part(dataset.hflip)
        group = training_group(cell, n_real, n_synthetic, n_val, objective)
        (real_per_step, synthetic_per_step), _, _ = group
        plain = calibration.classifier(cell.classifier_entry, shape, k, synthetic=False)
        step = plain["step_s"]
        trained, inferred, views = (
            objective.passes(recipe.batch_size) if objective is not None and objective.active else (0, 0, [])
        )
        if synthetic_per_step or trained:  # an extra image trained costs what a synthetic one does
            # B real + B synthetic
            doubled = calibration.classifier(cell.classifier_entry, shape, k, synthetic=True)
            step += (doubled["step_s"] - plain["step_s"]) * (synthetic_per_step + trained) / recipe.batch_size
            self.peak = max(self.peak, doubled["peak_mem_mb"])
        step += inferred * plain["predict_s_per_image"]  # the views that only infer (FixMatch's weak one)
        for policy, magnitude, images in views:
            step += calibration.transform(policy, magnitude, dataset.hflip, shape, images)["step_s"]
        policy = strategy.batch_policy()
        if policy is not None:
            step += calibration.transform(*policy, dataset.hflip, shape, real_per_step + synthetic_per_step)[
                "step_s"
            ]
        self.peak = max(self.peak, plain["peak_mem_mb"])
        if strategy.trains_teacher():
            self._teacher(cell, shape, k, n_real, n_unlabelled, item)
        if generative is not None:
            self._generator(cell, generative, shape, k, n_synthetic, item)
        if cell.quality.enabled and not cell.is_check:
            self._quality(cell, shape, k, n_real, n_synthetic, n_pool, n_test, item)
        evaluated = cell.eval_points * n_val + (n_val if cell.is_check else n_real + n_val + n_test)
        return step, cell.budget_steps(n_real), group, evaluated * plain["predict_s_per_image"]

    def _teacher(self, cell: Cell, shape, k: int, n_real: int, n_unlabelled: int, item: CellWork) -> None:
        """The pseudo-label teacher of the cell's fit data (a cnn by its recipe on the labelled
        images, then its labels for the pool), where no earlier item trains it and the cache lacks it."""
        key = teacher_key(cell.fit_data_parts, cell.budget_scale, cell.teacher_steps)
        if key in self.teachers:
            item.needs.append((f"teacher:{key}", 0.0))  # being trained by an earlier item
            return
        if self.cache.load_json("teacher", key) is not None:
            return
        self.teachers.add(key)
        cost = self.calibration.classifier(TEACHER_NET, shape, k, synthetic=False)
        steps = teacher_steps(n_real, cell.budget_scale, cell.teacher_steps)
        seconds = steps * cost["step_s"] + (n_unlabelled + n_real) * cost["predict_s_per_image"]
        self.seconds["pseudo-label teachers"] += seconds
        item.needs.append((f"teacher:{key}", seconds))

    def _generator(self, cell: Cell, generative, shape, k: int, n_synthetic: int, item: CellWork) -> None:
        """The fit of the cell's generator, or of its stacked fit (all its members at once)."""
        keys = [peer.generator_key for peer in cell.stacked_peers() or [cell]]
        group = cell.generator_group
        if group in self.fitted_stacks:
            item.needs.append((f"generator:{group}", 0.0))  # being fitted by an earlier item
            return
        missing = [key for key in keys if self.cache.load_json("generator", key) is None]
        if not missing:  # (a cohort's cell fits its members that are missing, as the run does)
            return
        self.fitted_stacks.add(group)
        self.fits.update(missing)
        cost = self.calibration.generator(generative, shape, k, stacked=len(missing))
        steps, sampled = generative.fit_work(n_synthetic, k)
        fit_seconds = steps * cost["step_s"] + sampled * len(missing) * cost["sample_s_per_image"]
        self.seconds["generator fits"] += fit_seconds
        item.needs.append((f"generator:{group}", fit_seconds))
        self.peak = max(self.peak, cost["peak_mem_mb"])

    def _quality(
        self,
        cell: Cell,
        shape,
        k: int,
        n_real: int,
        n_synthetic: int,
        n_pool: int,
        n_test: int,
        item: CellWork,
    ) -> None:
        """The cell's quality row and its replicate's evaluator, where no earlier item computes them."""
        job, evaluator = cell.quality_group, cell.evaluator_group
        scored = scored_count(cell.quality.samples, n_synthetic or n_real, n_test)
        evaluator_seconds = job_seconds = 0.0
        if evaluator not in self.evaluators:
            self.evaluators.add(evaluator)
            evaluator_seconds = self.calibration.quality_seconds(
                evaluator_work(n_pool, scored, cell.budget_scale), shape, k, cell.quality.samples
            )
        if job not in self.quality_jobs:
            self.quality_jobs.add(job)
            job_seconds = self.calibration.quality_seconds(
                strategy_work(scored, n_synthetic, cell.budget_scale), shape, k, cell.quality.samples
            )
        self.seconds["quality"] += evaluator_seconds + job_seconds
        item.needs += [(f"evaluator:{evaluator}", evaluator_seconds), (f"quality:{job}", job_seconds)]


def cached_estimate(
    config,
    cells: list[Cell],
    done: set[str],
    cache_dir: Path,
    device: torch.device,
    workers: int,
    data_seconds: float = 0.0,
) -> str:
    """The headline of the plan from the cached calibration alone, for ``run``'s first line; where
    the cache lacks a cost (or anything else fails) a hint to run ``augbench plan``. Never raises."""
    try:
        return make_plan(
            config, cells, done, cache_dir, device, workers, data_seconds, calibrate=False
        ).headline()
    except Exception:  # noqa: BLE001 - an estimate must never stop a run
        return "run `augbench plan` for an estimate"
