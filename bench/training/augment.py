"""Per-sample image augmentation on batched tensors, on the training device.

Every image in a batch draws its own random parameters, and no Python loop runs over images:
geometric ops become one batched ``affine_grid``/``grid_sample`` with a matrix per sample, colour
ops are per-sample blends, RandAugment/TrivialAugment pick an op per sample (see
``apply_ops_per_sample``). No step waits on the device (no host sync). Images are float tensors
(N, C, H, W) in [0, 1]; labels are soft (N, K), so that mixup and cutmix can mix them.

Policies are registered by name and compose in the order given, e.g. ``basic+random-erasing``.
Each takes one ``magnitude`` in [0, 1] that scales its strength.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from bench.core.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class AugContext:
    """What a policy needs besides its images: the magnitude, whether flips are allowed, the generator."""

    magnitude: float
    hflip: bool  # the data set allows horizontal flips
    generator: torch.Generator


Policy = Callable[[torch.Tensor, torch.Tensor, AugContext], Batch]
POLICIES: Registry = Registry("policy", "policies")


def policy(name: str, version: str = "1", mixes_labels: bool = False):
    """Register a policy under ``name`` with its code version (bump it when its output changes);
    ``mixes_labels``: it blends images and their labels (no use on unlabelled images)."""

    def decorator(fn: Policy) -> Policy:
        fn.version, fn.mixes_labels = version, mixes_labels
        return POLICIES.register(name)(fn)

    return decorator


def policy_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{"policy:<name>": version}`` for the given policies (the ops they share are covered by them)."""
    return {f"policy:{name}": POLICIES.get(name).version for name in names}


def _rand(n: int, ctx: AugContext, device, low=0.0, high=1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=ctx.generator, device=device)


def _sign(n: int, ctx: AugContext, device) -> torch.Tensor:
    return torch.where(torch.rand(n, generator=ctx.generator, device=device) < 0.5, -1.0, 1.0)


# ----------------------------------------------------------------------------- geometry
def affine_matrices(
    n: int,
    device,
    rotate_deg=None,
    scale=None,
    shear_x=None,
    shear_y=None,
    translate_x=None,
    translate_y=None,
    flip=None,
) -> torch.Tensor:
    """Per-sample forward 3x3 matrices in normalized coordinates ([-1, 1]); None = no such op.

    Translations are fractions of the image size; ``flip`` is a boolean mask.
    """
    eye = torch.eye(3, device=device).expand(n, 3, 3).clone()
    m = eye.clone()
    if flip is not None:
        m[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    if scale is not None:
        m = _diag(scale, scale, eye) @ m
    if shear_x is not None or shear_y is not None:
        sh = eye.clone()
        if shear_x is not None:
            sh[:, 0, 1] = shear_x
        if shear_y is not None:
            sh[:, 1, 0] = shear_y
        m = sh @ m
    if rotate_deg is not None:
        angle = rotate_deg * (math.pi / 180.0)
        rot = eye.clone()
        rot[:, 0, 0], rot[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
        rot[:, 1, 0], rot[:, 1, 1] = torch.sin(angle), torch.cos(angle)
        m = rot @ m
    if translate_x is not None or translate_y is not None:
        tr = eye.clone()
        if translate_x is not None:
            tr[:, 0, 2] = 2.0 * translate_x
        if translate_y is not None:
            tr[:, 1, 2] = 2.0 * translate_y
        m = tr @ m
    return m


def _diag(sx, sy, eye):
    d = eye.clone()
    d[:, 0, 0], d[:, 1, 1] = sx, sy
    return d


def warp(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Apply per-sample forward affine matrices (N, 3, 3) with one grid_sample; empty area is 0."""
    inverse = torch.linalg.inv_ex(forward).inverse[:, :2, :]  # inv_ex: no error check, no host sync
    grid = F.affine_grid(inverse.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------- colour
@lru_cache(maxsize=16)
def _constant(values: tuple, shape: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, copied to the device once per process (a copy per batch would make
    every step wait for the device)."""
    return torch.tensor(values, dtype=dtype).view(shape).to(device)


def gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = _constant((0.299, 0.587, 0.114), (1, 3, 1, 1), x.device, x.dtype)
    return (x * weights).sum(1, keepdim=True)


def blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * a + (1 - factor) * b, per sample, clamped to [0, 1]."""
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp_(0.0, 1.0)


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = _constant((1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0), (3, 3), x.device, torch.float32) / 13.0
    channels = x.shape[1]
    weight = kernel.to(x.dtype).expand(channels, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=channels)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    span = high - low
    return torch.where(span > 1e-6, (x - low) / span.clamp_min(1e-6), x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalization per image and channel, with batched 256-bin histograms."""
    n, c, h, w = x.shape
    levels = (x * 255.0).round().long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.float32)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float32))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(h * w))).amin(1, keepdim=True)
    denom = (h * w - cdf_min).clamp_min(1.0)
    lut = ((cdf - cdf_min) / denom).clamp(0.0, 1.0)
    flat = torch.gather(lut, 1, levels).view(n, c, h, w).to(x.dtype)
    constant = (denom <= 1.0).view(n, c, 1, 1)  # a one-level channel stays as it is
    return torch.where(constant, x, flat)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = (2.0 ** (8 - bits)).view(-1, 1, 1, 1)
    return torch.floor(x * 255.0 / step) * step / 255.0


# ----------------------------------------------------------------------------- op table
# Each op: (images, magnitude in [0,1] per sample, random sign per sample) -> images.
def _op_geometric(**kw_of_strength):
    def op(x, m, s):
        kwargs = {k: f(m * s) for k, f in kw_of_strength.items()}
        return warp(x, affine_matrices(len(x), x.device, **kwargs))

    return op


AUGMENT_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": lambda x, m, s: x,
    "shear_x": _op_geometric(shear_x=lambda v: 0.3 * v),
    "shear_y": _op_geometric(shear_y=lambda v: 0.3 * v),
    "translate_x": _op_geometric(translate_x=lambda v: 0.3 * v),
    "translate_y": _op_geometric(translate_y=lambda v: 0.3 * v),
    "rotate": _op_geometric(rotate_deg=lambda v: 30.0 * v),
    "brightness": lambda x, m, s: blend(x, torch.zeros_like(x), 1.0 + 0.9 * m * s),
    "color": lambda x, m, s: blend(x, gray(x).expand_as(x), 1.0 + 0.9 * m * s),
    "contrast": lambda x, m, s: blend(
        x, gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), 1.0 + 0.9 * m * s
    ),
    "sharpness": lambda x, m, s: blend(x, _blur(x), 1.0 + 0.9 * m * s),
    "posterize": lambda x, m, s: posterize(x, 8 - (4.0 * m).floor()),
    "solarize": lambda x, m, s: torch.where(x >= (1.0 - m).view(-1, 1, 1, 1), 1.0 - x, x),
    "autocontrast": lambda x, m, s: autocontrast(x),
    "equalize": lambda x, m, s: equalize(x),
}


def apply_ops_per_sample(
    x: torch.Tensor, op_index: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor
) -> torch.Tensor:
    """Apply op ``op_index[i]`` of AUGMENT_OPS to image i (the same values either way): on the CPU
    each op runs once on the images that picked it; on an accelerator each op runs on the whole
    batch and every image keeps its own op's output, since picking out the images would wait on
    the device once per op."""
    return (ops_on_subsets if x.device.type == "cpu" else ops_masked)(x, op_index, magnitude, sign)


def ops_on_subsets(x, op_index, magnitude, sign) -> torch.Tensor:
    """Each image through the op ``op_index`` chose for it, each op run on its own images only
    (the CPU's way)."""
    out = x.clone()
    for k, op in enumerate(AUGMENT_OPS.values()):
        chosen = (op_index == k).nonzero().squeeze(1)
        if chosen.numel():
            out[chosen] = op(x[chosen], magnitude[chosen], sign[chosen])
    return out


def ops_masked(x, op_index, magnitude, sign) -> torch.Tensor:
    """The same as ``ops_on_subsets``, by running every op on the whole batch and keeping each image's
    own (no data-dependent shapes: the GPU's way)."""
    out = x
    for k, op in enumerate(AUGMENT_OPS.values()):
        out = torch.where((op_index == k).view(-1, 1, 1, 1), op(x, magnitude, sign), out)
    return out


# ----------------------------------------------------------------------------- policies
@policy("basic", version="2")  # 2: the crop/pad shift scales with magnitude
def basic(x: torch.Tensor, y: torch.Tensor, ctx: AugContext) -> Batch:
    """Random affine (rotation, scale, translation), crop/pad shift and, where allowed, flip: one warp."""
    n, _, h, w = x.shape
    m, dev = ctx.magnitude, x.device
    pad = round(max(1, round(h / 8)) * min(1.0, 2.0 * m))  # the crop/pad shift: full at magnitude 0.5
    shift_x = torch.randint(-pad, pad + 1, (n,), generator=ctx.generator, device=dev) / w
    shift_y = torch.randint(-pad, pad + 1, (n,), generator=ctx.generator, device=dev) / h
    forward = affine_matrices(
        n,
        dev,
        rotate_deg=_rand(n, ctx, dev, -30.0 * m, 30.0 * m),
        scale=_rand(n, ctx, dev, 1.0 - 0.2 * m, 1.0 + 0.2 * m),
        translate_x=_rand(n, ctx, dev, -0.1 * m, 0.1 * m) + shift_x,
        translate_y=_rand(n, ctx, dev, -0.1 * m, 0.1 * m) + shift_y,
        flip=(_rand(n, ctx, dev) < 0.5) if ctx.hflip else None,
    )
    return warp(x, forward), y


@policy("randaugment")
def randaugment(x: torch.Tensor, y: torch.Tensor, ctx: AugContext, num_ops: int = 2) -> Batch:
    """RandAugment: each image applies ``num_ops`` ops drawn for it, all at the policy magnitude."""
    n, dev = len(x), x.device
    strength = torch.full((n,), float(ctx.magnitude), device=dev)
    for _ in range(num_ops):
        op_index = torch.randint(0, len(AUGMENT_OPS), (n,), generator=ctx.generator, device=dev)
        x = apply_ops_per_sample(x, op_index, strength, _sign(n, ctx, dev))
    return x, y


@policy("trivialaugment")
def trivialaugment(x: torch.Tensor, y: torch.Tensor, ctx: AugContext) -> Batch:
    """TrivialAugment: one op per image, its strength uniform in [0, 2*magnitude] (capped at 1)."""
    n, dev = len(x), x.device
    op_index = torch.randint(0, len(AUGMENT_OPS), (n,), generator=ctx.generator, device=dev)
    strength = (_rand(n, ctx, dev) * 2.0 * ctx.magnitude).clamp_(max=1.0)
    return apply_ops_per_sample(x, op_index, strength, _sign(n, ctx, dev)), y


def boxes(n: int, h: int, w: int, area: torch.Tensor, aspect: torch.Tensor, ctx: AugContext, dev):
    """Per-sample boolean masks (N, 1, H, W) of rectangles with given area fraction and aspect."""
    return placed_boxes(h, w, area, aspect, _rand(n, ctx, dev), _rand(n, ctx, dev))


def placed_boxes(
    h: int,
    w: int,
    area: torch.Tensor,
    aspect: torch.Tensor,
    top_share: torch.Tensor,
    left_share: torch.Tensor,
) -> torch.Tensor:
    """``boxes`` with its placement given: top and left as shares in [0, 1) of the room left."""
    dev = area.device
    box_h = (torch.sqrt(area * aspect) * h).clamp(1, h)
    box_w = (torch.sqrt(area / aspect) * w).clamp(1, w)
    top = top_share * (h - box_h)
    left = left_share * (w - box_w)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (rows >= top.view(-1, 1, 1).floor())
        & (rows < (top + box_h).view(-1, 1, 1).floor())
        & (cols >= left.view(-1, 1, 1).floor())
        & (cols < (left + box_w).view(-1, 1, 1).floor())
    )
    return inside.unsqueeze(1)


@policy("random-erasing")
def random_erasing(x: torch.Tensor, y: torch.Tensor, ctx: AugContext) -> Batch:
    """Random erasing: with probability 0.5, a random rectangle (2% to 40%*m of the area) becomes noise."""
    n, _, h, w = x.shape
    dev = x.device
    area = _rand(n, ctx, dev, 0.02, max(0.03, 0.4 * ctx.magnitude))
    aspect = torch.exp(_rand(n, ctx, dev, math.log(0.3), math.log(3.3)))
    mask = boxes(n, h, w, area, aspect, ctx, dev) & (_rand(n, ctx, dev) < 0.5).view(-1, 1, 1, 1)
    noise = torch.rand(x.shape, generator=ctx.generator, device=dev, dtype=x.dtype)
    return torch.where(mask, noise, x), y


def _beta(n: int, alpha: float, ctx: AugContext, dev) -> torch.Tensor:
    """Beta(alpha, alpha) per sample, drawn from the policy's generator via two Gamma draws."""
    a = torch.full((2, n), float(alpha), device=dev)
    draws = torch._standard_gamma(a, generator=ctx.generator)  # the generator-aware Gamma sampler
    return draws[0] / (draws[0] + draws[1]).clamp_min(1e-12)


def _partner(n: int, ctx: AugContext, dev) -> torch.Tensor:
    return torch.randperm(n, generator=ctx.generator, device=dev)


@policy("mixup", mixes_labels=True)
def mixup(x: torch.Tensor, y: torch.Tensor, ctx: AugContext) -> Batch:
    """Mixup with a Beta(0.4m, 0.4m) weight per image (alpha 0.2 at the default magnitude)."""
    n, dev = len(x), x.device
    lam = _beta(n, max(0.05, 0.4 * ctx.magnitude), ctx, dev)
    partner = _partner(n, ctx, dev)
    x = blend(x, x[partner], lam)
    return x, lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[partner]


@policy("cutmix", mixes_labels=True)
def cutmix(x: torch.Tensor, y: torch.Tensor, ctx: AugContext) -> Batch:
    """CutMix: a box per image from a partner image; labels mix by the pasted area (alpha 2m)."""
    n, _, h, w = x.shape
    dev = x.device
    lam = _beta(n, max(0.05, 2.0 * ctx.magnitude), ctx, dev)
    partner = _partner(n, ctx, dev)
    mask = boxes(n, h, w, 1.0 - lam, torch.ones(n, device=dev), ctx, dev)
    pasted = mask.float().mean(dim=(1, 2, 3)).view(-1, 1)
    return torch.where(mask, x[partner], x), (1 - pasted) * y + pasted * y[partner]


def parse_policy(text: str, field: str = "policy") -> tuple[str, ...]:
    """'basic+random-erasing' -> ('basic', 'random-erasing'); unknown names raise UserError."""
    names = tuple(part.strip() for part in text.split("+") if part.strip())
    for name in names:
        POLICIES.get(name, field=field)
    return names


def make_batch_transform(policy: tuple[str, ...], magnitude: float, hflip: bool):
    """A batch transform (x, y_soft, generator) -> (x, y_soft) applying the policies in order;
    None (the identity, drawing no random numbers) at magnitude 0, for every policy."""
    if magnitude == 0:
        return None
    steps = [POLICIES.get(name) for name in policy]

    def transform(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Batch:
        ctx = AugContext(magnitude, hflip, generator)
        for step in steps:
            x, y = step(x, y, ctx)
        return x, y

    return transform
