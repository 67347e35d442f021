"""A plugin for the fault injection (tests/faults/inject.py): with AUGBENCH_FAULT_FIT_SEED set, the
fit of every strategy raises a plain KeyError for the cells of that fit seed, as a bug in a
strategy's code would; without it, it changes nothing."""

import os

from bench.core.strategy import STRATEGIES

FAULT = os.environ.get("AUGBENCH_FAULT_FIT_SEED")


def _failing(fit, seed: int):
    def fit_with_a_bug(self, labelled, ctx):
        if ctx.seed == seed:
            return {}["a key the strategy forgot"]
        return fit(self, labelled, ctx)

    return fit_with_a_bug


if FAULT:
    for name in STRATEGIES.names():
        strategy = STRATEGIES.get(name)
        strategy.fit = _failing(strategy.fit, int(FAULT))
