"""The split protocol is deterministic, disjoint and stratified."""

import numpy as np
import pytest
import torch

from bench.core.errors import UserError
from bench.data.sets import DatasetEntry, load_dataset
from bench.data.splits import SplitSpec, make_split


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetEntry("digits"))


def _rows(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images}


def test_same_seed_gives_the_same_split(digits):
    a = make_split(digits, 10, SplitSpec(seed=3), replicate=1)
    b = make_split(digits, 10, SplitSpec(seed=3), replicate=1)
    assert np.array_equal(a.labelled_index, b.labelled_index)
    assert np.array_equal(a.val_index, b.val_index)
    assert torch.equal(a.test.images, b.test.images)


def test_replicates_vary_the_labelled_draw_but_not_val_or_test(digits):
    a = make_split(digits, 10, SplitSpec(seed=3), replicate=0)
    b = make_split(digits, 10, SplitSpec(seed=3), replicate=1)
    assert not np.array_equal(a.labelled_index, b.labelled_index)
    assert np.array_equal(a.val_index, b.val_index)
    assert torch.equal(a.test.labels, b.test.labels)


def test_another_split_seed_changes_the_split(digits):
    a = make_split(digits, 10, SplitSpec(seed=0), replicate=0)
    b = make_split(digits, 10, SplitSpec(seed=1), replicate=0)
    assert not np.array_equal(a.val_index, b.val_index)


def test_parts_are_disjoint_and_stratified():
    from bench.core.images import ImageSet, content_hash
    from bench.data.sets import Dataset

    # 300 images with unique content, 3 classes, no official test split
    images = torch.arange(300, dtype=torch.int64).view(300, 1, 1, 1)
    train = ImageSet(
        torch.stack([images % 256, images // 256], 1).view(300, 2, 1, 1).to(torch.uint8),
        torch.arange(300) % 3,
    )
    ds = Dataset("toy", train, None, ("a", "b", "c"), False, content_hash(train))
    split = make_split(ds, 10, SplitSpec(seed=0, val_per_class=20, test_fraction=0.3), replicate=0)
    test_rows, val_rows, lab_rows = (
        _rows(split.test.images),
        _rows(split.val.images),
        _rows(split.labelled.images),
    )
    assert len(test_rows) == 90 and len(val_rows) == 60 and len(lab_rows) == 30
    assert not test_rows & val_rows and not test_rows & lab_rows and not val_rows & lab_rows
    assert np.bincount(split.labelled.labels.numpy()).tolist() == [10] * 3
    assert np.bincount(split.val.labels.numpy()).tolist() == [20] * 3
    assert np.bincount(split.test.labels.numpy()).tolist() == [30] * 3


def test_all_regime_takes_the_whole_rest_of_the_pool(digits):
    split = make_split(digits, None, SplitSpec(seed=0, val_per_class=20), replicate=0)
    assert len(split.labelled) + len(split.val) + len(split.test) == len(digits.train)


def test_a_regime_larger_than_a_class_is_a_user_error(digits):
    with pytest.raises(UserError, match="regimes"):
        make_split(digits, 1000, SplitSpec(), replicate=0)


def test_official_test_split_is_used_when_present(tmp_path):
    from bench.core.images import ImageSet, content_hash
    from bench.data.sets import Dataset

    train = ImageSet(torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1), torch.arange(40) % 2)
    test = ImageSet(torch.full((6, 1, 1, 1), 200, dtype=torch.uint8), torch.tensor([0, 1] * 3))
    ds = Dataset("toy", train, test, ("a", "b"), False, content_hash(train, test))
    split = make_split(ds, 5, SplitSpec(val_per_class=3), replicate=0)
    assert torch.equal(split.test.images, test.images)
    assert len(split.val) == 6 and len(split.labelled) == 10
    assert not set(split.labelled_index) & set(split.val_index)
