"""Failures, written and read in one place. A failed row says why (``failure_reason``) and what
failed (``failure_kind``): ``method`` (the strategy diverged or collapsed: a result, kept by reruns),
``machine`` (a dead worker, out of memory) or ``error`` (the cell's code raised: a bug, with its
traceback); a rerun tries machine and error failures again."""

from __future__ import annotations

import traceback

import torch

from bench.core.errors import CellFailed, first_line
from bench.protocol.columns import written_by
from bench.run import provenance

STAGE_FAILURES = (CellFailed, torch.cuda.OutOfMemoryError, MemoryError)  # what a stage records as a failure


def succeeded() -> dict:
    """The columns that end a row whose every stage did its work: ok, and when."""
    return written_by("end", {"status": "ok", "failure_reason": "", "finished": provenance.now()})


def failed(reason: str, kind: str) -> dict:
    """The columns that end a failed row: its reason, its kind (method, machine, error) and when."""
    columns = {"status": "failed", "failure_reason": reason, "failure_kind": kind}
    return written_by("end", {**columns, "finished": provenance.now()})


def stage_failure(exc: Exception, stage: str = "") -> dict:
    """The columns of a cell that a stage failed with ``exc`` (named in the reason unless it is the fit
    or the training): the method's failure (CellFailed), or the machine's (out of memory)."""
    if isinstance(exc, CellFailed):
        reason, kind = str(exc).strip(), "method"
    else:
        reason, kind = f"out of memory ({first_line(exc, 200) or type(exc).__name__})", "machine"
    return failed(f"{stage} stage failed: {reason}" if stage else reason, kind)


def code_error(exc: Exception) -> dict:
    """The columns that end the row of a cell whose code raised ``exc``: failed, failure_kind
    ``error``, the exception as the reason, and its traceback (which the store writes to a file)."""
    reason = f"{type(exc).__name__}: {first_line(exc, 300) or 'raised'}"
    return {**failed(reason, "error"), "traceback": "".join(traceback.format_exception(exc))}


def failure_kind(record: dict) -> str | None:
    """A failed record's kind: ``method`` (a result), ``machine`` or ``error`` (not results); None
    for a cell that did not fail. Records written before ``failure_kind`` say it in their reason."""
    if record.get("status") != "failed":
        return None
    kind = record.get("failure_kind")
    if isinstance(kind, str) and kind:
        return kind
    return (
        "machine"
        if str(record.get("failure_reason", "")).startswith(("worker died", "its Ray worker died"))
        else "method"
    )


def runs_again(record: dict) -> bool:
    """Whether a rerun tries the record's cell again: the machine failed it (a dead worker, out of
    memory) or its code raised an error (which may be fixed by now); a method's failure is a result."""
    return failure_kind(record) in ("machine", "error")
