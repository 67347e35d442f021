"""The augmentation benchmark command runs and reports both measures (speed is not asserted)."""
import re

import pytest


@pytest.mark.parametrize("policy", ["basic", "trivialaugment"])
def test_bench_augment_prints_both_ratios(cli, policy):
    code, out, err = cli("bench-augment", "--dataset", "digits", "--policy", policy, "--images", "256",
                         "--steps", "2", "--threads", "1")
    assert code == 0, err
    for measure in ("augmentation alone", "cnn training with augmentation"):
        assert re.search(rf"{measure}\s+[\d,]+\s+[\d,]+\s+[\d.]+x", out), out


def test_bench_augment_refuses_other_policies(cli):
    code, _, err = cli("bench-augment", "--policy", "mixup")
    assert code == 2 and "basic or trivialaugment" in err
