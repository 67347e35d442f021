"""Stacked models: K models of one architecture held as parameters and buffers with a leading
dimension K, and called as one under ``torch.func.vmap``, so that K small models share each
kernel launch. Generator cohorts train this way (strategies/generative.py): unlike the
classifiers' grouped networks (bench/training/cohort.py) it takes any forward, since vmap batches
each operation, but every random draw has to come from outside (each member draws from its own
generator, then the draws are stacked).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


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
