"""Config fields have one source: their dataclass declaration. Parsing, --set, cell keys, run
fingerprints and the leaderboard's protocol check all follow from it."""

from dataclasses import dataclass

import pandas as pd
import pytest
from conftest import TINY_CONFIG

import configs
from bench.core.errors import UserError
from bench.core.schema import describe, option
from bench.protocol.config import BenchConfig, apply_overrides, load_config, parse_config, protocol_view
from bench.run.cell import Cell, expand_grid
from reports.leaderboard import check_same_protocol


@dataclass(frozen=True, kw_only=True)
class WithDummy(BenchConfig):
    """The protocol plus one new top-level field, declared in one place."""

    dummy: int = option(3, low=0, high=9, cell=True, protocol=True, help="a field added by a test")


def _config(schema=BenchConfig, **changes):
    return parse_config({**TINY_CONFIG, **changes}, schema=schema)


def _first_cell(config) -> Cell:
    return expand_grid(config, {"digits": "hash"})[0]


def test_a_new_field_reaches_parsing_keys_fingerprint_and_protocol(tmp_path):
    base, changed = _config(WithDummy), _config(WithDummy, dummy=4)
    assert (base.dummy, changed.dummy) == (3, 4)
    assert _first_cell(base).key != _first_cell(changed).key
    assert base.fingerprint != changed.fingerprint
    assert protocol_view(base.raw, WithDummy)["dummy"] == 3
    results = pd.DataFrame({"suite_version": ["1"], "data_hash": ["hash"]})
    with pytest.raises(UserError, match="dummy: 3 vs 4"):
        check_same_protocol(
            [(tmp_path / "a", base.raw, results), (tmp_path / "b", changed.raw, results)], schema=WithDummy
        )
    with pytest.raises(UserError, match="dummy: 10 is out of range"):
        _config(WithDummy, dummy=10)
    assert apply_overrides({}, ["dummy=5"], schema=WithDummy) == {"dummy": 5}
    assert any(path == "dummy" for path, _, _ in describe(WithDummy))


def test_fields_outside_a_cells_identity_leave_its_key_alone():
    base = _config()
    for change in ({"workers": 2}, {"tune": {"trials": 3}}, {"name": "other"}, {"device": "cpu"}):
        assert _first_cell(_config(**change)).key == _first_cell(base).key, change
    for change in (
        {"eval_points": 3},
        {"budget": {"scale": 0.1}},
        {"split": {"seed": 1, "val_per_class": 10}},
    ):
        assert _first_cell(_config(**change)).key != _first_cell(base).key, change
    assert _config(workers=2).fingerprint == base.fingerprint
    assert _config(seeds=3).fingerprint != base.fingerprint


def test_cell_key_is_stable():
    """The key of a fixed cell, pinned: an unintended change would invalidate every finished cell
    of existing run folders. (Revision 04b8b87 kept 5084eae's key, 1529686149437ba3dcef; protocol v2
    added the `mixing` section and the code version of every component the cell uses, 2ab8ad746d8c58212b31;
    issue 29 added the quality stage's versions to the cells that measure quality.)"""
    cell = _first_cell(_config())
    assert cell.canonical()["budget_scale"] == 0.05 and "budget" not in cell.canonical()
    assert cell.canonical()["mixing"] == {"mode": "add", "synthetic_pool": "fixed"}
    assert cell.canonical()["versions"] == {
        "strategy:none": "1",
        "classifier:mlp": "1",
        "suite": "1",
        "quality:metrics": "1",
        "quality:evaluator": "2",
        "quality:classifier:cnn": "1",
        "quality:suite": "1",
    }
    assert cell.key == "b1b5a276ce6db29ded46"


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "budget.scal=1",
            "unknown config field budget.scal; budget fields: check, check_seeds, floor, max_check_seeds, "
            "max_steps, plateau, scale, search, steps",
        ),
        ("colour=red", "unknown config field colour"),
        ("seeds.x=1", "config field seeds has no sub-fields"),
    ],
)
def test_set_paths_follow_the_schema(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        apply_overrides({}, [override])


def test_cells_are_built_by_keyword_only():
    config = _config()
    with pytest.raises(TypeError):
        Cell(config.datasets[0], "hash", 5, config.strategies[0], "mlp", 0, config)  # noqa - positional


@pytest.mark.parametrize("name", sorted(configs.bundled()))
def test_every_bundled_config_validates(name):
    assert load_config(name).name == name
