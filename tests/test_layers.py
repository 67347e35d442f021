"""The import layers of ARCHITECTURE.md hold: no upward import, no cycle, no import hidden in a
function to dodge one (the CLI alone imports lazily, to start fast)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("bench", "strategies", "reports")
LAZY_ALLOWED = {"bench/cli.py"}  # the top layer may defer its imports


def _function_level_project_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                names = (
                    [a.name for a in inner.names]
                    if isinstance(inner, ast.Import)
                    else [inner.module or ""]
                    if isinstance(inner, ast.ImportFrom)
                    else []
                )
                found += [
                    f"{path.relative_to(ROOT)}:{inner.lineno} {n}"
                    for n in names
                    if n.split(".")[0] in PACKAGES
                ]
    return found


def test_no_project_import_inside_a_function():
    offenders = [
        hit
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in LAZY_ALLOWED
        for hit in _function_level_project_imports(path)
    ]
    assert offenders == []


def _lint(root: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_import_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, bad_import",
    [
        ("bench/core/images.py", "import bench.run.tasks"),  # the core reaching up
        ("bench/data/sets.py", "from strategies import STRATEGIES"),  # a lower layer importing strategies
        ("bench/data/splits.py", "import bench.training.loop"),  # siblings of one layer must stay independent
    ],
)
def test_a_broken_layer_is_caught(tmp_path, module, bad_import):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n\ndef _sneaky():\n    {bad_import}\n")
    result = _lint(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout + result.stderr


def test_the_layers_are_the_packages_of_bench():
    """Listing bench/ shows the layers: every sub-package is a layer of the contract, and bench/ holds
    no other module than the CLI."""
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    named = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    packages = {f"bench.{p.name}" for p in (ROOT / "bench").iterdir() if (p / "__init__.py").is_file()}
    assert packages == named - {"bench.cli", "reports", "strategies"}
    assert sorted(p.name for p in (ROOT / "bench").glob("*.py")) == ["__init__.py", "cli.py"]
