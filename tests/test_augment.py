"""Classical policies: per-sample randomness within a batch, valid ranges, label mixing."""

import pytest
import torch
import torch.nn.functional as F

from bench.training.augment import (
    AUGMENT_OPS,
    POLICIES,
    apply_ops_per_sample,
    equalize,
    make_batch_transform,
    ops_masked,
    ops_on_subsets,
)


def _batch(n=64, c=1, size=16):
    """n copies of one image with structure (a bright off-centre square on a gradient)."""
    image = torch.linspace(0, 0.5, size).view(1, 1, size).expand(c, size, size).clone()
    image[:, 3:9, 4:11] = 1.0
    return image.expand(n, c, size, size).clone(), F.one_hot(torch.zeros(n, dtype=torch.long), 10).float()


@pytest.mark.parametrize("policy", POLICIES.names())
def test_each_image_of_a_batch_gets_its_own_parameters(policy):
    x, y = _batch()
    transform = make_batch_transform((policy,), 0.8, hflip=True)
    if policy in ("mixup", "cutmix"):  # these mix images: give each image its own content and label
        x = x * torch.linspace(0.2, 1.0, len(x)).view(-1, 1, 1, 1)
        y = F.one_hot(torch.arange(len(x)) % 10, 10).float()
    out, labels = transform(x, y, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and labels.shape == y.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    distinct = {tuple(img.flatten().mul(1000).round().tolist()) for img in out}
    # identical inputs must not all come out alike: many distinct outputs in one batch
    assert len(distinct) > len(out) // 4, f"{policy}: only {len(distinct)} distinct outputs"
    assert torch.allclose(labels.sum(1), torch.ones(len(x)))


def test_the_same_generator_state_gives_the_same_batch():
    x, y = _batch()
    transform = make_batch_transform(("randaugment",), 0.5, hflip=False)
    a, _ = transform(x, y, torch.Generator().manual_seed(7))
    b, _ = transform(x, y, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_mixup_labels_follow_the_image_weights():
    x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)] * 8)
    y = F.one_hot(torch.tensor([0, 1] * 8), 2).float()
    out, labels = POLICIES.get("mixup")(x, y, _ctx(1.0))
    # image value = weight of class 1 (zeros image is class 0, ones image is class 1)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), labels[:, 1], atol=1e-5)


def test_cutmix_labels_follow_the_pasted_area():
    x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)] * 8)
    y = F.one_hot(torch.tensor([0, 1] * 8), 2).float()
    out, labels = POLICIES.get("cutmix")(x, y, _ctx(0.5))
    assert torch.allclose(out.mean(dim=(1, 2, 3)), labels[:, 1], atol=1e-5)


def test_no_flip_where_the_data_set_forbids_it():
    # a left-right asymmetric image at magnitude 0 can only be shifted by the crop/pad step, never flipped
    x = torch.zeros(32, 1, 16, 16)
    x[:, :, :, :3] = 1.0
    out, _ = POLICIES.get("basic")(x, torch.zeros(32, 2), _ctx(0.0, hflip=False))
    assert (out[:, :, :, :8].sum(dim=(1, 2, 3)) > out[:, :, :, 8:].sum(dim=(1, 2, 3))).all()
    flipped, _ = POLICIES.get("basic")(x, torch.zeros(32, 2), _ctx(0.0, hflip=True))
    assert (flipped[:, :, :, :8].sum(dim=(1, 2, 3)) < flipped[:, :, :, 8:].sum(dim=(1, 2, 3))).any()


def test_ops_run_per_selected_image_only():
    x, _ = _batch(n=len(AUGMENT_OPS))
    index = torch.arange(len(AUGMENT_OPS))
    out = apply_ops_per_sample(x, index, torch.full((len(x),), 0.9), torch.ones(len(x)))
    assert torch.equal(out[0], x[0])  # op 0 is identity
    # on a gray image that already spans [0, 1], colour and autocontrast have nothing to change
    unchanged = {name for i, name in enumerate(AUGMENT_OPS) if torch.equal(out[i], x[i])}
    assert unchanged == {"identity", "color", "autocontrast"}


def test_the_accelerator_path_gives_every_image_the_value_of_the_cpu_path():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 12, 12, generator=generator)
    index = torch.randint(0, len(AUGMENT_OPS), (64,), generator=generator)
    magnitude, sign = (
        torch.rand(64, generator=generator),
        torch.where(torch.rand(64, generator=generator) < 0.5, -1.0, 1.0),
    )
    assert torch.allclose(
        ops_masked(x, index, magnitude, sign), ops_on_subsets(x, index, magnitude, sign), atol=1e-6
    )


def test_equalize_spreads_a_narrow_histogram():
    x = torch.linspace(0.4, 0.6, 64).view(1, 1, 8, 8)
    out = equalize(x)
    assert out.min() < 0.05 and out.max() > 0.95


def _ctx(magnitude, hflip=True):
    from bench.training.augment import AugContext

    return AugContext(magnitude, hflip, torch.Generator().manual_seed(1))
