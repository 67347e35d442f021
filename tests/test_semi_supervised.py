"""The semi-supervised protocol: unlabelled images granted only to the strategies that learn from
them and never with their labels, keys unchanged for the rest, the pseudo-label control, and the
refusals of bad input."""

import numpy as np
import pandas as pd
import pytest
import torch
from tests_support import SEMI, lie_about_pool_labels, tiny_config_with, without_times

from bench.protocol.config import parse_config
from bench.run.cell import cached_dataset, data_of, expand_grid, make_strategy
from bench.run.stages import fit_context, run_cell
from strategies.teacher import confident_balanced

CPU = torch.device("cpu")
POOL_USERS = [
    {"name": "pseudo-label", "params": {"threshold": 0.2}},  # the tests' teacher trains 15 steps
    {"name": "vae", "label": "vae-pool", "params": {"steps": 300, "generator_data": "pool"}},
    {"name": "gan", "label": "gan-pool", "params": {"steps": 30, "generator_data": "pool"}},
    {
        "name": "vae",
        "label": "vae-m2",
        "params": {"steps": 150, "generator_data": "pool", "pool_model": "m2"},
    },
    {
        "name": "gan",
        "label": "gan-pseudo",
        "params": {"steps": 30, "generator_data": "pseudo-labelled", "pseudo_threshold": 0.2},
    },
]


def _cells(strategies: list, **change) -> list:
    config = parse_config({**SEMI, "strategies": strategies, **change})
    return expand_grid(config, {d.title: cached_dataset(d).content_hash for d in config.datasets})


def test_strategies_that_do_not_learn_from_the_pool_keep_their_keys():
    plain = [
        "none",
        {"name": "classical", "params": {"policy": "basic"}},
        {"name": "gan", "params": {"steps": 30}},
    ]
    assert [c.key for c in _cells(plain)] == [c.key for c in _cells(plain, unlabelled="none")]
    assert [c.fit_data for c in _cells(plain)] == ["labelled"] * 3
    pool_users = _cells(POOL_USERS)
    assert [c.fit_data for c in pool_users] == ["labelled+pool"] * len(POOL_USERS)
    # each design its own generator
    assert len({c.generator_key for c in pool_users[1:]}) == len(POOL_USERS) - 1
    assert [c.key for c in pool_users] != [c.key for c in _cells(POOL_USERS, unlabelled=200)]
    gan, gan_pool = _cells([{"name": "gan", "params": {"steps": 30}}, POOL_USERS[2]])
    assert gan.key != gan_pool.key and gan.generator_key != gan_pool.generator_key
    assert gan.train_seed == gan_pool.train_seed  # the same initial weights and real batches as `none`


def test_random_pool_labels_change_no_classifier_result(tmp_path, monkeypatch):
    cells = _cells(POOL_USERS)
    honest = [run_cell(c, CPU, tmp_path / "honest", "r") for c in cells]
    lie_about_pool_labels(monkeypatch)
    lied_to = [run_cell(c, CPU, tmp_path / "lied-to", "r") for c in cells]
    assert [r["status"] for r in honest] == [r["status"] for r in lied_to] == ["ok"] * len(cells)
    assert honest[0]["status"] == honest[1]["status"] == "ok" and honest[0]["pseudo_labelled"] > 0
    for before, after in zip(honest, lied_to):
        assert without_times(after) == without_times(before), before["strategy"]


def test_pseudo_label_takes_confident_images_class_balanced_most_confident_first():
    probabilities = torch.tensor(
        [[0.9, 0.1], [0.99, 0.01], [0.6, 0.4], [0.2, 0.8], [0.05, 0.95], [0.97, 0.03]]
    )
    assert confident_balanced(probabilities, 0.85, 4).tolist() == [1, 4, 5]  # class 1 has one confident image
    assert confident_balanced(probabilities, 0.5, 2).tolist() == [1, 4]
    assert confident_balanced(probabilities, 1.0, 4).tolist() == []


def test_a_pseudo_labelled_generator_learns_from_the_images_and_labels_of_the_control(tmp_path):
    from strategies.teacher import teacher_probabilities

    control, generator = _cells(
        [{"name": "pseudo-label", "params": {"threshold": 0.2, "ratio": 10.0}}, POOL_USERS[4]]
    )
    dataset, split = data_of(generator)
    ctx = fit_context(generator, dataset, split, CPU, tmp_path)
    seen, info = make_strategy(generator.strategy).generator_training_set(split.labelled, ctx)
    confident = teacher_probabilities(split.labelled, ctx)[0].max(1).values >= 0.2
    assert info["pseudo_labelled"] == int(confident.sum()) > 0
    assert torch.equal(seen.images[: len(split.labelled)], split.labelled.images)
    taken = make_strategy(control.strategy).fit(
        split.labelled, fit_context(control, dataset, split, CPU, tmp_path)
    )
    assert len(taken.synthetic) == info["pseudo_labelled"]  # every confident image: the control's very data
    order = lambda images: images.flatten(1).sum(1).argsort()  # noqa: E731
    tail = seen.images[len(split.labelled) :]
    assert torch.equal(tail[order(tail)], taken.synthetic.images[order(taken.synthetic.images)])
    assert len(list(tmp_path.rglob("teacher*.json"))) == 1  # one teacher, shared


def test_a_semi_supervised_run_says_what_each_fit_saw(tmp_path, cli):
    config = tiny_config_with(
        tmp_path,
        {
            **SEMI,
            "strategies": ["none", POOL_USERS[0], POOL_USERS[1]],
            "quality": {"enabled": True, "samples": 100},
        },
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    results = pd.read_csv(tmp_path / "run" / "results.csv").set_index("strategy")
    assert results.loc["none", "fit_data"] == "labelled"
    assert results.loc["pseudo-label", "fit_data"] == results.loc["vae-pool", "fit_data"] == "labelled+pool"
    assert results.loc["pseudo-label", "quality_kind"] == "pseudo-labelled"
    assert results.loc["pseudo-label", "pseudo_labelled"] > 0
    assert bool(results.loc["vae-pool", "evaluator_overlaps_fit"]) and not bool(
        results.loc["none", "evaluator_overlaps_fit"]
    )
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "vae-pool †" in report and "pseudo-label †" in report and "none †" not in report
    assert "generation against the same unlabelled images" in report
    against = pd.read_csv(tmp_path / "run" / "report" / "tables" / "against_control.csv")
    assert against[["strategy", "control"]].values.tolist() == [["vae-pool", "pseudo-label"]]


def test_a_folder_of_unlabelled_images_is_granted_and_content_hashed(tmp_path):
    train = cached_dataset(parse_config(SEMI).datasets[0]).train
    path = tmp_path / "pool.npz"
    np.savez(path, x=train.images[:300].numpy())
    every_image = {"name": "pseudo-label", "params": {"threshold": 0.0}}
    first = _cells([every_image], unlabelled={"path": str(path)})[0]
    assert first.fit_data == "labelled+folder:pool.npz"
    record = run_cell(first, CPU, None, "r")
    assert record["status"] == "ok" and 0 < record["pseudo_labelled"] <= 100  # at most 10 a class (ratio 1)
    np.savez(path, x=train.images[300:600].numpy())
    assert _cells([every_image], unlabelled={"path": str(path)})[0].key != first.key


@pytest.mark.parametrize(
    "change, field",
    [
        ({"unlabelled": 100_000}, "unlabelled"),
        ({"unlabelled": "everything"}, "unlabelled"),
        ({"unlabelled": "none", "strategies": ["none", POOL_USERS[1]]}, "strategies[1]"),
        ({"strategies": [{"name": "pseudo-label", "params": {"threshold": 1.5}}]}, "threshold"),
        ({"strategies": [{"name": "vae", "params": {"pool_model": "m2"}}]}, "pool_model"),
        (
            {"strategies": [{"name": "gan", "params": {"generator_data": "pool", "pseudo_threshold": 0.5}}]},
            "pseudo_threshold",
        ),
        (
            {"strategies": [{"name": "vae", "params": {"generator_data": "pool", "pool_model": "m3"}}]},
            "pool_model",
        ),
        ({"unlabelled": {"path": "/no/such/folder"}}, "unlabelled.path"),
    ],
)
def test_bad_unlabelled_input_is_one_clear_error_and_writes_nothing(tmp_path, cli, change, field):
    config = tiny_config_with(tmp_path, {**SEMI, "strategies": ["none", POOL_USERS[0]], **change})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and err.startswith("augbench: error:") and len(err.strip().splitlines()) == 1, err
    assert field in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unlabelled_images_of_another_size_are_refused_before_anything_is_written(tmp_path, cli):
    path = tmp_path / "big.npz"
    np.savez(path, x=np.zeros((20, 1, 16, 16), dtype=np.uint8))
    config = tiny_config_with(
        tmp_path, {**SEMI, "strategies": ["none", POOL_USERS[0]], "unlabelled": {"path": str(path)}}
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and "unlabelled.path" in err and "(1, 16, 16)" in err and "(1, 8, 8)" in err, err
    assert not (tmp_path / "run").exists()


def test_the_control_table_pairs_each_pool_strategy_with_each_control_by_seed():
    from scipy import stats

    from reports.tables import control_table

    accuracy = {
        "none": [0.70, 0.72, 0.71, 0.69],
        "pseudo-label": [0.75, 0.74, 0.77, 0.73],
        "gan-pool": [0.78, 0.75, 0.80, 0.76],
        "gan": [0.60, 0.61, 0.62, 0.63],
    }
    names = {"none": "none", "pseudo-label": "pseudo-label", "gan-pool": "gan", "gan": "gan"}
    seen = {
        "none": "labelled",
        "pseudo-label": "labelled+pool",
        "gan-pool": "labelled+pool",
        "gan": "labelled",
    }
    results = pd.DataFrame(
        [
            {
                "dataset": "d",
                "regime": "10",
                "classifier": "cnn",
                "strategy": s,
                "strategy_name": names[s],
                "fit_data": seen[s],
                "replicate": k,
                "status": "ok",
                "test_accuracy": a,
            }
            for s, values in accuracy.items()
            for k, a in enumerate(values)
        ]
    )
    table = control_table(results)
    # not gan, not none
    assert table[["strategy", "control"]].values.tolist() == [["gan-pool", "pseudo-label"]]
    row = table.iloc[0]
    assert row["delta_mean"] == pytest.approx(
        np.mean(np.subtract(accuracy["gan-pool"], accuracy["pseudo-label"]))
    )
    assert row["p_value"] == pytest.approx(
        stats.ttest_rel(accuracy["gan-pool"], accuracy["pseudo-label"]).pvalue
    )
    assert row["p_holm"] == pytest.approx(row["p_value"])  # one comparison


def test_the_control_table_takes_every_control_of_the_run_and_names_the_strongest():
    from reports.tables import control_labels, control_table

    accuracy = {
        "none": [0.70, 0.72, 0.71],
        "pseudo-label": [0.75, 0.74, 0.77],
        "fixmatch": [0.90, 0.91, 0.92],
        "vae-pool": [0.78, 0.75, 0.80],
        "vae-pool+fixmatch": [0.91, 0.93, 0.92],
    }
    controls = {"pseudo-label", "fixmatch"}
    results = pd.DataFrame(
        [
            {
                "dataset": "d",
                "regime": "10",
                "classifier": "cnn",
                "strategy": s,
                "strategy_name": s.split("+")[0].replace("-pool", ""),
                "fit_data": "labelled" if s == "none" else "labelled+pool",
                "control": s in controls,
                "replicate": k,
                "status": "ok",
                "test_accuracy": a,
            }
            for s, values in accuracy.items()
            for k, a in enumerate(values)
        ]
    )
    assert control_labels(results) == ["fixmatch", "pseudo-label"]  # the strongest first
    table = control_table(results)
    # fixmatch is a control, not a contender; none is neither
    assert sorted(map(tuple, table[["strategy", "control"]].values.tolist())) == [
        ("vae-pool", "fixmatch"),
        ("vae-pool", "pseudo-label"),
        ("vae-pool+fixmatch", "fixmatch"),
        ("vae-pool+fixmatch", "pseudo-label"),
    ]
    assert (table["strongest"] == (table["control"] == "fixmatch")).all()
    from reports.narrative import against_control

    lines = against_control(table)
    assert lines[0].startswith(
        "d, 10 per class, cnn: the strongest control is fixmatch (controls in this run:"
    )
    undecided = table[~table["verdict"].isin(["better", "worse"])]
    assert len(undecided)  # each says what its test could have seen
    for row in undecided.itertuples():
        assert f"{row.verdict} from {row.control} (" in "\n".join(lines)
        assert f"its test could see {100 * row.mde:.1f} pp or more" in "\n".join(lines)


def test_what_the_run_says_decides_the_controls_also_where_none_could_not_be_compared():
    """The comparison with the controls needs the strategy and its controls converged, not `none`:
    where `none`'s check is unresolved, "What this run says" still states it."""
    from reports.narrative import findings
    from reports.tables import comparison_table, control_table

    accuracy = {"none": [0.70, 0.72, 0.71], "fixmatch": [0.90, 0.91, 0.92], "vae-pool": [0.78, 0.75, 0.80]}
    results = pd.DataFrame(
        [
            {
                "dataset": "d",
                "regime": "10",
                "classifier": "cnn",
                "strategy": s,
                "strategy_name": s.replace("-pool", ""),
                "fit_data": "labelled" if s == "none" else "labelled+pool",
                "control": s == "fixmatch",
                "replicate": k,
                "status": "ok",
                "test_accuracy": a,
                "gap_accuracy": 0.1,
                "gap_loss": 0.1,
                "budget_check": "unresolved" if s == "none" else "converged",
            }
            for s, values in accuracy.items()
            for k, a in enumerate(values)
        ]
    )
    table, controls = comparison_table(results), control_table(results)
    assert table.loc[table["strategy"] != "none", "verdict"].str.startswith("undertrained").all()
    assert controls["verdict"].iloc[0] == "worse"
    said = "\n".join(findings(table, results, controls))
    assert "No strategy could be compared with `none`" in said
    assert "vae-pool saw the unlabelled pool; worse than fixmatch" in said
