"""Stacked models: K models of one architecture held as parameters and buffers with a leading
dimension K, and called as one under ``torch.func.vmap``, so that K small models share each
kernel launch. Stacked generator fits train this way (strategies/generator_fits.py): unlike the
classifiers' grouped networks (bench/training/cohort.py) it takes any forward, since vmap batches
each operation, but every random draw has to come from outside (each member draws from its own
generator, then the draws are stacked).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bench.core.errors import CellFailed


class _Calling(nn.Module):
    """Runs ``fn(module, *args)`` as its forward, so that functional_call can call any method."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, fn: Callable, *args):
        return fn(self.module, *args)


class Stacked:
    """K models of one architecture as stacked tensors. ``params`` are leaf tensors (an optimizer
    over them updates each member as its own optimizer would: the optimizers are elementwise);
    buffers that a forward updates in place (batch-norm statistics) update per member."""

    def __init__(self, models: list[nn.Module], adapt: Callable[[nn.Module], None] | None = None):
        """``adapt(model)``: makes a copy of the architecture callable under vmap where some layer
        needs it (e.g. a spectral norm's in-place power iteration)."""
        self.k = len(models)
        self.params, self.buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        if adapt is not None:
            adapt(base)
        self._calling = _Calling(base)

    def parameters(self, prefix: str = "") -> list[torch.Tensor]:
        """The stacked parameters whose names start with ``prefix`` (e.g. one sub-model's)."""
        return [value for name, value in self.params.items() if name.startswith(prefix)]

    def map(self, fn: Callable[..., Any], *per_member: Any, shared: tuple = ()) -> Any:
        """``fn(model, *args, *shared)`` for every member at once: ``model`` is the member's model,
        each of ``per_member`` has a leading dimension K (one slice per member) or is None, ``shared`` is
        the same for all; the results come stacked along a new leading dimension K."""

        def one(params, buffers, *args):
            state = {f"module.{name}": value for name, value in {**params, **buffers}.items()}
            return functional_call(self._calling, state, (fn, *args, *shared))

        in_dims = (0, 0, *(None if arg is None else 0 for arg in per_member))
        return vmap(one, in_dims=in_dims, randomness="error")(self.params, self.buffers, *per_member)

    @torch.no_grad()
    def copy_into(self, models: list[nn.Module]) -> None:
        """Each member's trained parameters and buffers into its model."""
        stacked = {**self.params, **self.buffers}
        for index, model in enumerate(models):
            for name, value in [*model.named_parameters(), *model.named_buffers()]:
                value.copy_(stacked[name][index])


def divergence_failure(name: str, number: float, step: int) -> CellFailed:
    """The failure of a generator fit whose ``name`` loss stopped being finite."""
    return CellFailed(f"generator training diverged: {name} loss is {number} at step {step}")


def stack_draws(draws: list[tuple]) -> tuple:
    """The members' random draws of a step (each a tuple of tensors, tuples of tensors, or None),
    stacked member by member."""

    def stacked(parts):
        if parts[0] is None:
            return None
        return stacked_tuple(parts) if isinstance(parts[0], tuple) else torch.stack(parts)

    def stacked_tuple(tuples):
        return tuple(stacked(parts) for parts in zip(*tuples))

    return stacked_tuple(draws)


class Members:
    """The K generators of one architecture that a fit trains at once: one model as it is (the
    operations of a fit alone), several as stacked models under vmap (bench/training/stacked.py),
    each with its own parameters, buffers and optimizer state. It keeps which ones diverged."""

    def __init__(self, models: list[nn.Module], adapt: Callable[[nn.Module], None] | None = None):
        self.models = models
        self.stacked = Stacked(models, adapt) if len(models) > 1 else None
        self.failures: list[CellFailed | None] = [None] * len(models)

    def parameters(self, prefix: str = "") -> list[torch.Tensor]:
        """The parameters (stacked, for several) whose names start with ``prefix``."""
        if self.stacked is None:
            return [p for name, p in self.models[0].named_parameters() if name.startswith(prefix)]
        return self.stacked.parameters(prefix)

    def buffers(self, prefix: str = "") -> list[torch.Tensor]:
        """The buffers (stacked, for several) whose names start with ``prefix``."""
        if self.stacked is None:
            return [b for name, b in self.models[0].named_buffers() if name.startswith(prefix)]
        return [value for name, value in self.stacked.buffers.items() if name.startswith(prefix)]

    def map(self, fn, *per_member, shared: tuple = ()):
        """``fn(model, *args, *shared)`` for every member, results stacked along a leading K; each of
        ``per_member`` has a leading K (one slice per member) or is None."""
        if self.stacked is None:
            out = fn(self.models[0], *(None if a is None else a[0] for a in per_member), *shared)
            return tuple(t.unsqueeze(0) for t in out) if isinstance(out, tuple) else out.unsqueeze(0)
        return self.stacked.map(fn, *per_member, shared=shared)

    def diverged(self, step: int, **losses: torch.Tensor) -> bool:
        """Mark each member whose loss (a K-vector each) is NaN or infinite as failed (one device
        sync); True when all have failed."""
        for name, values in losses.items():
            for index, number in enumerate(values.detach().float().tolist()):
                if self.failures[index] is None and not math.isfinite(number):
                    self.failures[index] = divergence_failure(name, number, step)
        return all(failure is not None for failure in self.failures)

    def finish(self) -> list[CellFailed | None]:
        """Each member's trained weights into its own model; per member its failure, or None."""
        if self.stacked is not None:
            self.stacked.copy_into(self.models)
        return self.failures
