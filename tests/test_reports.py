"""Reports and leaderboard: numbers match the results table, the HTML renders in a real browser,
mixed protocols are refused."""

import re
import shutil
import subprocess

import pandas as pd
import pytest
from tests_support import tiny_config_with


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny run with a generative strategy (so quality columns and sample grids exist)."""
    from bench.cli import main

    tmp = tmp_path_factory.mktemp("report")
    config = tiny_config_with(
        tmp,
        {
            "strategies": [
                "none",
                {"name": "classical", "label": "classical-basic", "params": {"policy": "basic"}},
                {"name": "vae", "params": {"steps": 300}},
            ],
            "seeds": 3,
            "quality": {"samples": 100},
        },
    )
    out = tmp / "run"
    assert main(["run", config, "--out", str(out)]) == 0
    return out


def test_run_writes_the_report(tiny_run):
    report = tiny_run / "report"
    assert (report / "index.html").is_file() and (report / "report.md").is_file()
    assert {p.name for p in (report / "figures").glob("*.png")} >= {
        "accuracy.png",
        "gain_heatmap.png",
        "gap.png",
        "learning_curves.png",
        "gain_vs_quality.png",
    }
    assert (report / "tables" / "comparison.csv").is_file()
    assert list((tiny_run / "samples").glob("*vae*.npz"))
    # a labelled grid of what the classifier trains on, for classical (augmented views) and vae
    grids = sorted(p.name for p in (report / "figures").glob("samples-*.png"))
    assert len(grids) == 2 and "classical-basic" in grids[0] and "vae" in grids[1]


def test_report_numbers_match_the_results_table(tiny_run):
    results = pd.read_csv(tiny_run / "results.csv")
    table = pd.read_csv(tiny_run / "report" / "tables" / "comparison.csv")
    expected = results.groupby(["classifier", "strategy"])["test_accuracy"].mean()
    for row in table.itertuples():
        assert row.acc_mean == pytest.approx(expected[(row.classifier, row.strategy)], abs=1e-12)
    paired = results.pivot_table(
        index=["classifier", "replicate"], columns="strategy", values="test_accuracy"
    )
    for row in table[table["strategy"] != "none"].itertuples():
        delta = (paired[row.strategy] - paired["none"]).xs(row.classifier).mean()
        assert row.delta_mean == pytest.approx(delta, abs=1e-12)
    markdown = (tiny_run / "report" / "report.md").read_text()
    html = (tiny_run / "report" / "index.html").read_text()
    for row in table.itertuples():  # each mean accuracy appears, as printed, in both reports
        shown = f"{100 * row.acc_mean:.1f} ["
        assert shown in markdown and shown in html


def test_each_comparison_says_what_it_could_not_see(tiny_run):
    from reports.stats import minimum_detectable_effect

    results = pd.read_csv(tiny_run / "results.csv")
    table = pd.read_csv(tiny_run / "report" / "tables" / "comparison.csv")
    paired = results.pivot_table(
        index=["classifier", "replicate"], columns="strategy", values="test_accuracy"
    )
    for row in table[table["strategy"] != "none"].itertuples():
        changes = (paired[row.strategy] - paired["none"]).xs(row.classifier)
        assert row.mde == pytest.approx(
            minimum_detectable_effect(changes.std(ddof=1), len(changes), row.holm_level), rel=1e-9
        )
    markdown = (tiny_run / "report" / "report.md").read_text()
    assert "| MDE pp" in markdown
    if (table["verdict"] == "no significant difference").any():
        assert "could not be seen" in markdown


def test_report_refuses_a_folder_without_results(tmp_path, cli):
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "no results.parquet" in err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const ok = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = 'images ' + ok + '/' + images.length;
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    html = (tiny_run / "report" / "index.html").read_text()
    # no file is missing: every link or source is embedded data or a file that exists
    for target in re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html):
        assert target.startswith("data:image/png;base64,") or (tiny_run / "report" / target).is_file(), target
    probe = tiny_run / "report" / "probe.html"
    probe.write_text(html.replace("</body>", CHECK_IMAGES + "</body>"))
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe.unlink()
    title = re.search(r"<title>(.*?)</title>", result.stdout)
    assert title, result.stderr[-2000:]
    loaded, total = map(int, re.fullmatch(r"images (\d+)/(\d+)", title.group(1)).groups())
    assert total >= 6 and loaded == total


def test_leaderboard_ranks_a_run(tiny_run, tmp_path, cli):
    code, out, err = cli("leaderboard", tiny_run, "--out", tmp_path, "--allow-undertrained")  # a test budget
    assert code == 0, err
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert set(board["strategy"]) == {"none", "classical-basic", "vae"}
    assert board["mean_rank"].isna().all()  # 3 seeds: too few units for a Friedman test
    assert board["iqm_accuracy"].is_monotonic_decreasing
    # the tiny run has no budget check: every comparison is counted undertrained, none won or lost
    contenders = board[board["strategy"] != "none"]
    assert (contenders["undertrained"] == 2).all() and (contenders["wins"] + contenders["losses"] == 0).all()
    assert "augbench leaderboard" in (tmp_path / "leaderboard.md").read_text()
    table = pd.read_csv(tiny_run / "report" / "tables" / "comparison.csv")
    for row in board[board["ties"] > 0].itertuples():  # what its ties could not see: their largest MDE
        tied = table[(table["strategy"] == row.strategy) & (table["verdict"] == "no significant difference")]
        assert row.tie_mde == pytest.approx(tied["mde"].max()) or tied.empty


def test_leaderboard_refuses_mixed_protocols(tiny_run, tmp_path, cli):
    other = tmp_path / "other"
    config = tiny_config_with(
        tmp_path,
        {"strategies": ["none"], "split": {"seed": 1, "val_per_class": 10}, "quality": {"enabled": False}},
    )
    assert cli("run", config, "--out", other)[0] == 0
    code, _, err = cli("leaderboard", tiny_run, other, "--out", tmp_path / "board")
    assert code == 2 and "different protocols" in err and "split" in err
    assert not (tmp_path / "board").exists()


def test_agreement_pairs_two_runs_cell_by_cell(tmp_path, cli):
    import pandas as pd

    def run(name, accuracies):
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame(
            {
                "dataset": "digits",
                "regime": "10",
                "strategy": ["none", "none", "gan", "gan"],
                "classifier": "cnn",
                "replicate": [0, 1, 0, 1],
                "status": ["ok", "ok", "ok", "failed"],
                "test_accuracy": accuracies,
                "train_seconds": 1.0,
                "generator_key": ["", "", "g0", "g1"],
                "generator_fit_seconds": [0.0, 0.0, 5.0, 5.0],
            }
        ).to_parquet(folder / "results.parquet")
        return folder

    a, b = run("a", [0.50, 0.60, 0.70, 0.10]), run("b", [0.52, 0.59, 0.70, 0.90])
    code, out, err = cli("agreement", a, b)
    assert code == 0, err
    # the failed one left out
    assert "the 3 cells finished in both: mean |change| 1.00 pp, mean change +0.33 pp" in out
    assert "| none | cnn | 2 | +0.50 | 1.50 |" in out and "| gan | cnn | 1 | +0.00 | 0.00 |" in out
    code, _, err = cli("agreement", a, tmp_path / "missing")
    assert code == 2 and err.startswith("augbench: error:") and "missing" in err
