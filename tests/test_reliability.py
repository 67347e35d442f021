"""A run folder holds exactly its grid, one process uses it at a time, damaged state heals, and
file-system or config mistakes end in one clear error line (issue: reliability)."""

import json
import os

import pandas as pd
import pytest
import yaml
from tests_support import tiny_config_with

from bench.protocol.config import load_config
from bench.run.store import RunStore

ONE_CELL = {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1, "quality": {"enabled": False}}


@pytest.fixture
def one_cell_run(tmp_path, cli):
    config = tiny_config_with(tmp_path, ONE_CELL)
    out = tmp_path / "run"
    assert cli("run", config, "--out", out)[0] == 0
    return config, out


def test_a_foreign_cell_file_stays_out_of_the_tables(one_cell_run, cli):
    config, out = one_cell_run
    (key,) = [p.stem for p in (out / "cells").glob("*.json")]
    record = json.loads((out / "cells" / f"{key}.json").read_text())
    (out / "cells" / "0123456789abcdef0123.json").write_text(
        json.dumps({**record, "key": "0123456789abcdef0123"})
    )
    code, _, err = cli("run", config, "--out", out)
    assert code == 0 and "1 cell file(s)" in err and "in no round of this run" in err
    assert list(pd.read_csv(out / "results.csv")["key"]) == [key]


def test_changed_data_under_a_run_folder_is_said_plainly(one_cell_run, cli):
    config, out = one_cell_run
    marker = yaml.safe_load((out / "config.yaml").read_text())
    marker["data_hashes"]["digits"] = "f" * 64  # as if the data had been another
    (out / "config.yaml").write_text(yaml.safe_dump(marker))
    code, _, err = cli("run", config, "--out", out)
    assert code == 0 and "the data of digits changed since this folder's last run" in err


def test_a_second_process_on_a_folder_in_use_is_refused(one_cell_run, cli):
    config, out = one_cell_run
    (out / ".results.csv.x1y2.tmp").write_text("left by a killed write")
    with RunStore(out).lock():
        code, _, err = cli("run", config, "--out", out)
    assert code == 2 and f"is in use by another augbench process (pid {os.getpid()})" in err
    assert cli("run", config, "--out", out)[0] == 0
    assert not list(out.rglob("*.tmp"))  # leftovers of interrupted writes are cleared


def test_sizes_are_checked_before_the_folder_is_touched(tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("run", tiny_config_with(tmp_path, {**ONE_CELL, "regimes": [5, 500]}), "--out", out)
    assert code == 2 and "regimes=500 asks for" in err and not out.exists()
    assert cli("run", tiny_config_with(tmp_path, {**ONE_CELL, "regimes": [5]}), "--out", out)[0] == 0


def test_damaged_state_is_moved_aside_and_recomputed(tmp_path, cli):
    config = tiny_config_with(
        tmp_path, {**ONE_CELL, "strategies": ["none", {"name": "vae", "params": {"steps": 150}}]}
    )
    out = tmp_path / "run"
    assert cli("run", config, "--out", out)[0] == 0
    generator = next((out / "cache").glob("generator-*.pt"))
    generator.write_bytes(generator.read_bytes()[:100])  # truncated
    cells = sorted((out / "cells").glob("*.json"))
    cells[0].write_text("{}")
    cells[1].unlink()  # the vae cell must run again, and meet the truncated generator
    code, _, err = cli("run", config, "--out", out)
    assert code == 0, err
    assert (
        f"{cells[0]} could not be read (not a cell record)" in err and f"{generator} could not be read" in err
    )
    # what the terminal shows as lines
    pieces = [piece for line in err.split("\n") for piece in line.split("\r")]
    assert any(piece.startswith(f"augbench: warning: {generator} could not be read") for piece in pieces), err
    assert (out / "cells" / f"{cells[0].name}.corrupt").is_file()
    assert generator.with_name(generator.name + ".corrupt").is_file()
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 and (results["status"] == "ok").all()
    assert results.set_index("strategy").loc["vae", "generator_cache_hit"] == False  # noqa: E712 - refitted


def test_provenance_keeps_every_invocation(one_cell_run, cli):
    config, out = one_cell_run
    assert cli("run", config, "--out", out)[0] == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert len(provenance["history"]) == 2 and provenance["history"][-1]["started"] == provenance["started"]
    assert [entry["cells_run"] for entry in provenance["history"]] == [1, 0]


def test_corrupt_config_marker_is_named_as_corrupt(one_cell_run, cli):
    config, out = one_cell_run
    (out / "config.yaml").write_text("fingerprint: [unclosed\n")
    code, _, err = cli("run", config, "--out", out)
    assert code == 2 and f"{out / 'config.yaml'} is corrupt" in err


def test_report_of_an_interrupted_run_says_to_rerun(tmp_path, cli):
    (tmp_path / "cells").mkdir()
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "rerun `augbench run`" in err


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"name": "../../escaped"}, "is not a run name"),
        ({"datasets": ["digits", "digits"]}, "data set(s) digits given twice"),
        ({"classifiers": ["mlp", "mlp"]}, "classifier(s) mlp given twice"),
    ],
)
def test_names_that_escape_or_repeat_are_refused(tmp_path, cli, change, expected):
    code, _, err = cli("run", tiny_config_with(tmp_path, {**ONE_CELL, **change}), "--out", tmp_path / "run")
    assert code == 2 and expected in err


def test_duplicate_yaml_keys_are_refused(tmp_path, cli):
    path = tmp_path / "twice.yaml"
    path.write_text("name: twice\ndatasets: [digits]\nstrategies: [none]\nregimes: [5]\nstrategies: [gan]\n")
    code, _, err = cli("run", path, "--out", tmp_path / "run")
    assert code == 2 and "key 'strategies' is given twice (first on line 3)" in err and "line 5" in err
    assert len(err.strip().splitlines()) == 1


def test_file_system_errors_are_clean(one_cell_run, tmp_path, cli):
    config, run = one_cell_run
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out in (a_file, a_file / "run"):
        code, _, err = cli("run", config, "--out", out)
        assert code == 2 and err.startswith("augbench: error:") and "Traceback" not in err, err
    code, _, err = cli("leaderboard", run, "--out", a_file, "--allow-undertrained")
    assert code == 2 and err.startswith("augbench: error:") and "a-file" in err


def test_tune_refuses_a_folder_of_another_config(tmp_path, cli):
    out = tmp_path / "tune"
    first = tiny_config_with(tmp_path, {**ONE_CELL, "strategies": ["none", "classical"]})
    RunStore(out).claim(load_config(first), {"digits": "h"})
    other = tiny_config_with(
        tmp_path, {**ONE_CELL, "strategies": ["none", "classical"], "seeds": 2}, name="other"
    )
    code, _, err = cli("tune", other, "--out", out, "--trials", "1")
    assert code == 2 and "holds a run of a different config" in err
