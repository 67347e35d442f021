"""`none`: the baseline, real labelled images only."""

from bench.core.strategy import Strategy, TrainingData, register_strategy


@register_strategy("none")
class NoAugmentation(Strategy):
    """Train on the real labelled images as they are."""

    def fit(self, labelled, ctx):
        return TrainingData(real=labelled)
