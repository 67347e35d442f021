"""Objectives: losses on unlabelled images that the one training loop adds to the supervised loss
(consistency regularization: FixMatch, and Mean Teacher, UDA or FlexMatch-style thresholds as
modules of their own).

A strategy hands an objective to the trainer in ``TrainingData.objective``, with the unlabelled
images the protocol granted it in ``TrainingData.unlabelled``. Each step the loop draws
``unlabelled_per_step`` of them from a stream with a seed of its own (so that the labelled batches,
initial weights and dropout stay those of `none`) and adds ``loss`` to the supervised loss. An
objective declares its params (``Param``, as strategies do) and a version that enters the keys;
it registers by name with ``register_objective``: a new one is one module in this package (each is
imported with it) or in a plugin.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, ClassVar

import torch

from bench.core.errors import UserError
from bench.core.registry import Registry
from bench.core.strategy import Param, resolve_declared
from bench.training.augment import POLICIES, make_batch_transform, parse_policy, policy_versions

# images in [0, 1] (N, C, H, W) -> the classifier's logits (float32), in train mode
Forward = Callable[[torch.Tensor], torch.Tensor]


class Objective:
    """Base class: subclasses set ``params`` and implement ``unlabelled_per_step``, ``loss`` and
    ``passes``; register with ``register_objective``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when the objective's code changes what it trains
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, hflip: bool, **values: Any):
        self.hflip = hflip  # the data set allows horizontal flips (for its views' policies)
        self.values = values  # the resolved param values

    @classmethod
    def resolve_params(cls, given: dict[str, Any], where: str) -> dict[str, Any]:
        """Defaults filled in, every value validated; an unknown name raises UserError."""
        return resolve_declared(cls.params, given, where, f"objective {cls.name!r}")

    @classmethod
    def versions(cls, params: dict[str, Any]) -> dict[str, str]:
        """The code versions what it trains depends on (``objective:<name>``, its views' policies)."""
        return {f"objective:{cls.name}": cls.version}

    @property
    def active(self) -> bool:
        """False where it adds nothing (a weight of 0): the loop then draws no unlabelled image, and
        the strategy trains exactly like the same strategy without it."""
        return True

    def unlabelled_per_step(self, batch_size: int) -> int:
        """Unlabelled images per step beside a labelled batch of ``batch_size``."""
        raise NotImplementedError

    def loss(
        self, forward: Forward, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to add, weighted; the share of ``images`` it used, e.g. FixMatch's mask rate)
        for a batch of unlabelled images (float in [0, 1]); random choices draw from ``generator``."""
        raise NotImplementedError

    def passes(self, batch_size: int) -> tuple[int, int, list[tuple[str, float, int]]]:
        """What a step adds, for `augbench plan`: (images trained through the network, images only
        inferred, [(policy, magnitude, images transformed)])."""
        raise NotImplementedError


OBJECTIVES: Registry = Registry("objective", "objectives")


def register_objective(name: str):
    """Class decorator: registers an Objective subclass under ``name``."""
    return OBJECTIVES.register_class(name)


def view_policy(value: Any, where: str) -> str:
    """A view's policy names joined by '+': registered ones that do not mix labels (an unlabelled
    image has none to mix)."""
    if not isinstance(value, str):
        raise UserError(f"{where}: expected policy names joined by '+', got {value!r}")
    names = parse_policy(value, field=where)
    mixing = [name for name in names if POLICIES.get(name).mixes_labels]
    if mixing:
        usable = ", ".join(n for n in POLICIES.names() if not POLICIES.get(n).mixes_labels)
        raise UserError(
            f"{where}: {', '.join(mixing)} mixes labels, which unlabelled images have none of; use {usable}"
        )
    return "+".join(names)


def view_versions(*policies: str) -> dict[str, str]:
    """The versions of the policies that make an objective's views."""
    return {k: v for text in policies for k, v in policy_versions(parse_policy(text)).items()}


def view(
    policy: str, magnitude: float, hflip: bool
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A view of unlabelled images: (images in [0, 1], generator) -> the images the policy made."""
    transform = make_batch_transform(parse_policy(policy), magnitude, hflip)
    if transform is None:
        return lambda x, generator: x
    return lambda x, generator: transform(x, x.new_zeros(len(x), 1), generator)[0]


def make_objective(name: str, params: dict[str, Any], hflip: bool) -> Objective:
    """The registered objective ``name`` with resolved ``params``, for a data set with(out) flips."""
    return OBJECTIVES.get(name)(hflip, **params)


def objective_versions(name: str, params: dict[str, Any]) -> dict[str, str]:
    """The code versions of the registered objective ``name`` with ``params``."""
    return OBJECTIVES.get(name).versions(params)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
