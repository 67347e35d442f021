"""The classifier suite: fixed, versioned architectures, each with its own training recipe.

Changing an architecture or a recipe changes results: bump that classifier's ``version`` when you
do (only its cells recompute); bump SUITE_VERSION when what the whole suite shares changes (the
training loop, the input normalization).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, Callable

import torch
from torch import nn

from bench.core.errors import UserError
from bench.core.keys import stable_hash
from bench.core.registry import Registry

SUITE_VERSION = "1"


# a recipe's optimizer by name: (parameter groups, learning rate) -> the optimizer
OPTIMIZERS: dict[str, Callable[[list[dict], float], torch.optim.Optimizer]] = {
    "sgd": lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True),
    "adamw": lambda groups, lr: torch.optim.AdamW(groups, lr=lr),
}


@dataclass(frozen=True)
class Recipe:
    """How a classifier is trained: optimizer, schedule, batch size and budget.

    The budget is ``epochs`` passes over the real labelled images, but at least ``min_steps``
    optimizer steps, so that tiny low-data regimes still train. Every strategy of a cell gets the
    same number of steps, whatever synthetic data it adds.
    """

    optimizer: str  # a name in OPTIMIZERS: "sgd" (Nesterov) or "adamw"
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    min_steps: int
    label_smoothing: float = 0.0

    def steps(self, n_real: int, scale: float = 1.0) -> int:
        per_epoch = math.ceil(n_real / self.batch_size)
        return max(1, round(max(self.epochs * per_epoch, self.min_steps) * scale))


@dataclass(frozen=True)
class SuiteClassifier:
    """A registered classifier: how to build it for an input shape and class count, its training
    recipe, and its code version (in every key of a cell it trains)."""

    build: Callable[[tuple[int, int, int], int], nn.Module]
    recipe: Recipe
    version: str = "1"
    groupable: bool = True  # its layers group into cohorts (bench/training/cohort.py); timm's do not
    options: tuple[str, ...] = ()  # config keys of its entry that ``build`` takes as keyword arguments
    required: tuple[str, ...] = ()  # those of them an entry must give
    built_at_load: bool = False  # built once, tiny, when the config loads: a missing library fails there


CLASSIFIERS: Registry = Registry("classifier")


def classifier(name: str, recipe: Recipe, version: str = "1", **traits: Any):
    """Register a builder ``(image_shape, num_classes, **options) -> nn.Module`` with its recipe, version
    and the other ``SuiteClassifier`` fields (``options`` a config entry may give it, ...)."""

    def decorator(build):
        CLASSIFIERS.register(name)(SuiteClassifier(build, recipe, version, **traits))
        return build

    return decorator


@classifier("mlp", Recipe("adamw", lr=1e-3, weight_decay=1e-2, batch_size=128, epochs=30, min_steps=300))
def mlp(shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, num_classes),
    )


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@classifier("cnn", Recipe("sgd", lr=0.05, weight_decay=5e-4, batch_size=128, epochs=30, min_steps=300))
def cnn(shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Two conv blocks of two 3x3 convs; pooling only while the map is at least 8 px."""
    c, h, _ = shape
    layers = _conv_bn(c, 32) + _conv_bn(32, 32)
    layers += [nn.MaxPool2d(2)] if h >= 16 else []
    layers += _conv_bn(32, 64) + _conv_bn(64, 64)
    layers += [nn.MaxPool2d(2)] if h >= 8 else []
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


GROUPABLE = (BasicBlock,)  # containers whose forward combines their children elementwise: cohorts group them


@classifier("resnet", Recipe("sgd", lr=0.05, weight_decay=5e-4, batch_size=128, epochs=30, min_steps=300))
def resnet(shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A ResNet for small images: a 3x3 stem (no max-pool), three stages of two basic blocks
    (widths 32/64/128), stride 2 between stages only while the map is at least 8 px."""
    c, h, _ = shape
    layers: list[nn.Module] = _conv_bn(c, 32)
    width, size = 32, h
    for out in (32, 64, 128):
        stride = 2 if out != 32 and size >= 8 else 1
        size = math.ceil(size / stride)
        layers += [BasicBlock(width, out, stride), BasicBlock(out, out, 1)]
        width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def timm_classifier(
    shape: tuple[int, int, int],
    num_classes: int,
    model: str,
    pretrained: str | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """A timm model (optional extra: ``pip install -e '.[timm]'``) for ``shape`` images: ``in_chans``
    and the head set to the data, weights from a local file (``weights_only``; a head of another
    size is left as initialised), inputs resized to ``input_size`` where given."""
    try:
        import timm
    except ImportError:
        raise UserError("classifier timm needs the timm package: pip install -e '.[timm]'") from None
    if not timm.is_model(model):
        raise UserError(f"classifier timm: unknown model {model!r}; see timm.list_models() for the names")
    net = timm.create_model(model, pretrained=False, num_classes=num_classes, in_chans=shape[0])
    if pretrained:
        try:
            state = torch.load(pretrained, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise UserError(f"classifier timm: weights file {pretrained} does not load ({exc})") from None
        own = net.state_dict()
        net.load_state_dict(
            {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False
        )
    return nn.Sequential(Resize(input_size), net) if input_size else net


class Resize(nn.Module):
    """Bilinear resize of a batch to size x size (a timm model's expected input)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


TIMM_RECIPE = Recipe("adamw", lr=1e-3, weight_decay=0.05, batch_size=64, epochs=30, min_steps=300)
CLASSIFIERS.register("timm")(
    SuiteClassifier(
        timm_classifier,
        TIMM_RECIPE,
        "1",
        groupable=False,
        options=("model", "pretrained", "input_size"),
        required=("model",),
        built_at_load=True,
    )
)


@dataclass(frozen=True)
class ClassifierEntry:
    """A classifier of a protocol: a suite member by name (``cnn``), or a configured one
    (``{name: timm, model: resnet18, pretrained: FILE, input_size: 64, recipe: {...}}``) whose
    options and recipe are part of its cells' keys."""

    label: str
    name: str
    options: tuple[tuple[str, Any], ...] = ()
    recipe: Recipe | None = None  # None: the registered one
    weights_hash: str = ""  # content hash of the `pretrained` file, if any

    @property
    def training_recipe(self) -> Recipe:
        return self.recipe or CLASSIFIERS.get(self.name, field="classifiers").recipe

    @property
    def groupable(self) -> bool:
        """Whether its cells can train in cohorts (else they train alone, whatever ``cohort`` says)."""
        return CLASSIFIERS.get(self.name, field="classifiers").groupable

    def build(self, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return CLASSIFIERS.get(self.name, field="classifiers").build(shape, num_classes, **dict(self.options))

    def versions(self) -> dict[str, str]:
        """The suite's versions, and for a configured classifier its library, options and recipe."""
        found = classifier_versions(self.name)
        if self.options or self.recipe:
            found["classifier-config"] = stable_hash(
                {
                    "options": dict(self.options),
                    "recipe": asdict(self.training_recipe),
                    "weights": self.weights_hash,
                    "library": _library_version(self.name),
                },
                16,
            )
        return found


def _library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def build_classifier(name: str, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A fresh, untrained network of the registered classifier ``name``."""
    return CLASSIFIERS.get(name, field="classifiers").build(shape, num_classes)


def classifier_versions(name: str) -> dict[str, str]:
    """The code versions a trained classifier depends on: its own and the suite's."""
    return {f"classifier:{name}": CLASSIFIERS.get(name, field="classifiers").version, "suite": SUITE_VERSION}
