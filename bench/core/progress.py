"""Progress of long work inside a cell (a generator's fit, its sampling), for the run's progress
bar, and warnings that must not land inside that bar. The process that runs a cell sets where
reports and warnings go (an executor: its worker's pipe to the run, or the run's bar itself);
elsewhere reports go nowhere and warnings to stderr. Reporting changes no result."""

from __future__ import annotations

import sys
from typing import Callable, Iterator

_sink: list[Callable[[str], None]] = []  # the current process's receiver, if any
_warnings: list[Callable[[str], None]] = []  # where this process's warnings go, if not to stderr


def reporting_to(receiver: Callable[[str], None] | None) -> None:
    """Send this process's progress reports to ``receiver`` (None: nowhere)."""
    _sink[:] = [] if receiver is None else [receiver]


def warning_to(receiver: Callable[[str], None] | None) -> None:
    """Send this process's warnings and other lines for the user (``say``) to ``receiver`` (None:
    to stderr)."""
    _warnings[:] = [] if receiver is None else [receiver]


def warn(text: str) -> None:
    """One warning line (``augbench: warning: ...``), printed above the run's progress bar."""
    say(f"augbench: warning: {text}")


def say(line: str) -> None:
    """One line for the user, above the run's progress bar (to stderr where none is set)."""
    if _warnings:
        _warnings[0](line)
    else:
        print(line, file=sys.stderr)


def report(text: str) -> None:
    """One line of progress (e.g. ``gan fit 1200/2000``)."""
    for receiver in _sink:
        receiver(text)


def counted(total: int, label: str, reports: int = 20) -> Iterator[int]:
    """1 .. ``total``, reporting ``label step/total`` about ``reports`` times along the way."""
    every = max(1, total // reports)
    for step in range(1, total + 1):
        if step % every == 0 or step == total:
            report(f"{label} {step}/{total}")
        yield step
