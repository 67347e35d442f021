"""Cohorts: K classifiers of one architecture trained as one grouped network, so that K small
models share each kernel launch (the GPU is launch-bound on them; on the CPU it does not pay).

Member k owns channel block k of every activation: a convolution becomes one with ``groups=K``
(its input is the members' batches side by side along the channels), a batch norm one over K
times the channels (each member's statistics are over its own batch, as alone), a linear layer a
batched matmul, and elementwise layers stay as they are. Each member keeps its own initial
weights, batches, batch transform, dropout masks, batch-norm statistics and optimizer state (the
optimizers are elementwise, and no operation mixes two blocks); ``member`` copies a trained
member back into a model of its own. A model with a layer that cannot be grouped gives None, and
its cells train alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# layers that act on each channel (or element) alone, so K members side by side are K members
_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Identity,
    nn.AdaptiveAvgPool2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
)


class GroupedDropout(nn.Module):
    """Dropout whose mask for member k's block comes from member k's own generator (``generators``,
    set by the trainer from each member's seed), so that two members with one seed (`none` and an
    identity strategy) draw the same masks, whatever else the cohort holds."""

    def __init__(self, p: float, k: int):
        super().__init__()
        self.p, self.k = p, k
        self.generators: list[torch.Generator] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        block = (x.shape[0], x.shape[1] // self.k, *x.shape[2:])
        keep = torch.cat(
            [
                torch.empty(block, device=x.device).bernoulli_(1 - self.p, generator=g)
                for g in self.generators
            ],
            dim=1,
        )
        return x * keep.to(x.dtype) / (1 - self.p)


def seed_dropout(net: nn.Module, seeds: list[int]) -> None:
    """Give the grouped dropouts of ``net`` one generator per member, seeded by ``seeds``."""
    device = next(net.parameters()).device
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    for module in net.modules():
        if isinstance(module, GroupedDropout):
            module.generators = generators


_CONTAINERS = (nn.Sequential,)


class GroupedLinear(nn.Module):
    """K linear layers as one batched matmul, on inputs of K blocks of ``in_features`` side by side.
    The bias is stored flat (K * out), so that optimizers treat it as a bias (no weight decay)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.k, self.out_features = len(layers), layers[0].out_features
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))  # K x out x in
        self.bias = (
            nn.Parameter(torch.cat([layer.bias.detach() for layer in layers]))
            if layers[0].bias is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("bki,koi->bko", x.reshape(len(x), self.k, -1), self.weight)
        if self.bias is not None:
            out = out + self.bias.view(self.k, self.out_features)
        return out.reshape(len(x), -1)


def _grouped_conv(layers: list[nn.Conv2d]) -> nn.Conv2d | None:
    first = layers[0]
    if first.groups != 1 or first.padding_mode != "zeros":
        return None
    k = len(layers)
    grouped = nn.Conv2d(
        k * first.in_channels,
        k * first.out_channels,
        first.kernel_size,
        first.stride,
        first.padding,
        first.dilation,
        groups=k,
        bias=first.bias is not None,
    )
    with torch.no_grad():
        grouped.weight.copy_(torch.cat([layer.weight for layer in layers]))
        if first.bias is not None:
            grouped.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return grouped


def _grouped_norm(layers: list[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    first = layers[0]
    grouped = nn.BatchNorm2d(
        len(layers) * first.num_features, first.eps, first.momentum, first.affine, first.track_running_stats
    )
    with torch.no_grad():
        for name, value in [*grouped.named_parameters(), *grouped.named_buffers()]:
            parts = [getattr(layer, name) for layer in layers]
            value.copy_(parts[0] if value.ndim == 0 else torch.cat(parts))
    return grouped


def _grouped_leaf(layers: list[nn.Module]) -> nn.Module | None:
    first = layers[0]
    if type(first) is nn.Conv2d:
        return _grouped_conv(layers)
    if type(first) is nn.BatchNorm2d:
        return _grouped_norm(layers)
    if type(first) is nn.Linear:
        return GroupedLinear(layers)
    if type(first) is nn.Dropout:
        return GroupedDropout(first.p, len(layers))
    if type(first) is nn.Flatten and first.start_dim == 1 and first.end_dim == -1:
        return copy.deepcopy(first)  # K blocks of C x H x W flatten to K blocks side by side
    if isinstance(first, _ELEMENTWISE):
        return copy.deepcopy(first)
    return None


def grouped(models: list[nn.Module], containers: tuple[type, ...] = ()) -> nn.Module | None:
    """One network computing the K ``models`` (one architecture) side by side, each from its own
    weights; None where a layer cannot be grouped. ``containers``: module classes besides
    Sequential whose forward combines their children elementwise only (e.g. a residual block)."""
    first = models[0]
    if any(type(m) is not type(first) for m in models):
        return None
    if not any(True for _ in first.children()):
        return _grouped_leaf(models)
    if not isinstance(first, _CONTAINERS + containers):
        return None
    shell = copy.copy(first)
    shell._modules = {}
    for name, _ in first.named_children():
        child = grouped([m.get_submodule(name) for m in models], containers)
        if child is None:
            return None
        shell._modules[name] = child
    return shell


def side_by_side(batches: list[torch.Tensor]) -> torch.Tensor:
    """The members' input batches (each N x C x H x W) as the cohort's input (N x KC x H x W)."""
    return torch.cat(batches, dim=1)


def per_member(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The cohort's output (N x K*classes) as K x N x classes."""
    return logits.reshape(len(logits), k, -1).transpose(0, 1)


@torch.no_grad()
def member(cohort: nn.Module, index: int, k: int, model: nn.Module) -> nn.Module:
    """``model`` (of the members' architecture) with member ``index``'s trained weights and
    statistics copied out of ``cohort``."""
    for (name, target), (_, source) in zip(_state(model), _state(cohort)):
        if target.ndim == 0:
            target.copy_(source)
        elif source.shape[0] == k and source.shape[1:] == target.shape:  # a grouped linear weight
            target.copy_(source[index])
        else:
            size = target.shape[0]
            target.copy_(
                source.reshape(k, size, *target.shape[1:])[index]
                if source.shape[0] == k * size
                else source.reshape(k, -1)[index].view_as(target)
            )
    return model


def _state(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]


class Solo:
    """One model trained as it is: exactly the operations of a model alone (its dropout draws from the
    global generator, seeded by its initial weights). What stops it (its hook, a bug in its batches)
    ends its training by raising, as for any model."""

    def __init__(self, model: nn.Module):
        self.net = model

    def start(self, device: torch.device) -> nn.Module:
        """The network to train, on ``device`` in training mode (channels-last: faster convs)."""
        return self.net.to(device, memory_format=torch.channels_last).train()

    def stop(self, exc: Exception) -> None:
        raise exc

    def finish(self, models: list[nn.Module], device: torch.device) -> None:
        """Its trained weights are already in its model."""


class Grouped:
    """K models trained as one grouped network (this module's docstring), each member's dropout from
    its own generator; what stops one member stops it alone, and ``finish`` copies each member's
    trained weights back into its own model."""

    def __init__(self, models: list[nn.Module], dropout_seeds: list[int], containers: tuple[type, ...]):
        self.net = grouped(models, containers)
        if self.net is None:
            raise ValueError("these models cannot be trained as one network")
        self.dropout_seeds = dropout_seeds

    def start(self, device: torch.device) -> nn.Module:
        """The network to train, on ``device`` in training mode, its dropouts drawing from the
        members' own generators."""
        self.net.to(device, memory_format=torch.channels_last).train()
        seed_dropout(self.net, self.dropout_seeds)
        return self.net

    def stop(self, exc: Exception) -> None:
        """A member's failure is its own: the others go on."""

    def finish(self, models: list[nn.Module], device: torch.device) -> None:
        for index, model in enumerate(models):
            member(self.net, index, len(models), model.to(device, memory_format=torch.channels_last))


def trained_together(
    models: list[nn.Module],
    dropout_seeds: list[int],
    containers: tuple[type, ...] = (),
    alone_only: bool = False,
) -> Solo | Grouped:
    """How the one training loop trains ``models``: one as it is (``Solo``), several as one grouped
    network (``Grouped``); ``alone_only`` (a member with passes of its own, such as an objective on
    unlabelled images) refuses several."""
    if len(models) == 1:
        return Solo(models[0])
    if alone_only:
        raise ValueError("a member with an objective on unlabelled images trains alone")
    return Grouped(models, dropout_seeds, containers)
