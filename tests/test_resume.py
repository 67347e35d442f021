"""A resume stays fast at a thousand cells: it reads each cell file of the run folder once, and a
cell hashes its identity once."""

from collections import Counter
from pathlib import Path

from tests_support import tiny_config_with


def test_a_resume_reads_each_cell_file_once(tmp_path, cli, monkeypatch):
    config = tiny_config_with(
        tmp_path,
        {
            "strategies": ["none", "identity"],
            "classifiers": ["mlp"],
            "seeds": 3,
            "budget": {  # 2 checked seeds and no more, the budget never raised
                "scale": 0.05,
                "check": "on",
                "plateau": 4,
                "check_seeds": 2,
                "max_check_seeds": 2,
                "max_steps": 15,
            },
        },
    )
    out = tmp_path / "run"
    assert cli("run", config, "--out", out)[0] == 0
    files = sorted((out / "cells").glob("*.json"))
    assert len(files) == 6 + 4  # the grid and its budget checks

    reads: Counter = Counter()
    read_text = Path.read_text

    def counting(path, *args, **kwargs):
        if path.parent == out / "cells":
            reads[path.name] += 1
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    code, _, err = cli("run", config, "--out", out)
    assert code == 0 and "(10 already done)" in err, err
    assert set(reads) == {p.name for p in files} and max(reads.values()) == 1, reads


def test_a_cell_hashes_its_identity_once(tiny_config, monkeypatch):
    from bench.protocol.config import load_config
    from bench.run.cell import Cell, cached_dataset, expand_grid

    calls = Counter()
    canonical = Cell.canonical
    monkeypatch.setattr(Cell, "canonical", lambda self: calls.update([id(self)]) or canonical(self))
    config = load_config(str(tiny_config))
    cells = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})
    keys = [cell.key for cell in cells for _ in range(3)]
    assert len(set(keys)) == len(cells) and set(calls.values()) == {1}
