"""The fault-injection script (tests/faults/inject.py), one trial of each kind: slow, run by .ci/run."""

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_killed_mains_and_workers_leave_an_exact_run_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "tests/faults/inject.py", "--trials", "4", "--seed", "1", "--work", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 of 4 trials passed every check" in result.stdout
