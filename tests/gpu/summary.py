"""Figures of the GPU check (tests/gpu/check.sh) in one JSON file.

python tests/gpu/summary.py environment OUT   # the machine: GPU, driver, torch, Python
python tests/gpu/summary.py summary OUT       # everything check.sh measured -> OUT/gpu-check.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def environment() -> dict:
    import torch

    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError as exc:
        smi = str(exc)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "nvidia_smi": smi,
        "cpus": os.cpu_count(),
    }


def cuda_tests(path: Path) -> dict:
    if not path.is_file():
        return {"ran": False}
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    failures = [
        {"test": case.get("name"), "message": (bad.get("message") or "")[:400]}
        for case in suite.iter("testcase")
        for bad in case
        if bad.tag in ("failure", "error")
    ]
    skipped = [case.get("name") for case in suite.iter("testcase") if case.find("skipped") is not None]
    return {
        "ran": True,
        "tests": int(suite.get("tests", 0)),
        "failures": failures,
        "skipped": skipped,
        "seconds": float(suite.get("time", 0)),
    }


def slice_figures(out: Path, timing: Path) -> dict:
    import pandas as pd

    figures = json.loads(timing.read_text())
    plan = out / f"plan-{timing.stem}.json"
    if plan.is_file():
        figures["estimated_seconds"] = json.loads(plan.read_text())["wall_seconds"]
        figures["measured_over_estimated"] = figures["ms"] / 1000 / max(figures["estimated_seconds"], 1e-9)
    results = out / timing.stem / "results.csv"
    if results.is_file():
        table = pd.read_csv(results)
        figures.update(
            cells=len(table),
            cells_ok=int((table["status"] == "ok").sum()),
            failures=table.loc[table["status"] != "ok", "failure_reason"].unique().tolist()[:5],
        )
        for part in ("fit", "quality", "train"):
            if f"{part}_seconds" in table:
                figures[f"{part}_seconds_sum"] = float(table[f"{part}_seconds"].sum())
                figures[f"{part}_peak_mem_mb_max"] = float(table[f"{part}_peak_mem_mb"].max())
        ok = table[table["status"] == "ok"]
        figures["train_steps_per_second_by_classifier"] = (
            (ok.groupby("classifier")["budget_steps"].sum() / ok.groupby("classifier")["train_seconds"].sum())
            .round(1)
            .to_dict()
        )
        for part in ("fit", "quality"):
            if f"{part}_seconds" in ok:
                figures[f"{part}_seconds_by_strategy"] = (
                    ok.groupby("strategy")[f"{part}_seconds"].max().round(2).to_dict()
                )
        figures["mean_test_accuracy_by_strategy"] = (
            table.groupby("strategy")["test_accuracy"].mean().round(4).to_dict()
        )
    return figures


def scaled_estimates(plans: dict, slices: list[dict]) -> dict:
    """Per worker count, the plan's wall time of the whole protocol, and that time scaled by what
    the timed slices at that worker count took over what the plan estimated for them."""
    scaled = {}
    for workers in sorted({s["workers"] for s in slices}):
        full = plans.get(f"plan-full-w{workers}")
        timed = [
            s for s in slices if s["workers"] == workers and s.get("exit") == 0 and "estimated_seconds" in s
        ]
        if full is None or not timed:
            continue
        ratio = sum(s["ms"] / 1000 for s in timed) / max(sum(s["estimated_seconds"] for s in timed), 1e-9)
        scaled[str(workers)] = {
            "planned_seconds": full["wall_seconds"],
            "slices_measured_over_estimated": ratio,
            "scaled_seconds": full["wall_seconds"] * ratio,
            "slices": [s.get("config") for s in timed],
        }
    return scaled


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def summary(out: Path) -> dict:
    found = {
        "environment": _json(out / "environment.json"),
        "cuda_tests": cuda_tests(out / "cuda-tests.xml"),
        "bench_augment": {
            p.stem.removeprefix("bench-augment-"): json.loads(p.read_text())
            for p in sorted(out.glob("bench-augment-*.json"))
        },
        "step_profile": _json(out / "step-profile.json"),
        "cohorts": _json(out / "cohort-bench.json"),
        "plans": {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("plan-*.json"))},
        "slices": [slice_figures(out, p) for p in sorted(out.glob("slice-*.json"))],
    }
    found["full_protocol_estimate"] = scaled_estimates(found["plans"], found["slices"])
    (out / "gpu-check.json").write_text(json.dumps(found, indent=2))
    return found


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "environment":
        (folder / "environment.json").write_text(json.dumps(environment(), indent=2))
    else:
        print(json.dumps(summary(folder), indent=2))
