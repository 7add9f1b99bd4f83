"""ArrayBatches(groups=...): no batch holds a group twice where the data allow it (GLIM's sampler)."""

import numpy as np
import pytest

from neurodecode.train import ArrayBatches


def _batches(src, epoch=0, seed=0):
    return [b["g"].numpy() for b in src.epoch(epoch, seed=seed)]


def test_each_batch_holds_distinct_groups_and_every_sample_once():
    groups = np.repeat(np.arange(11), 3)  # 11 sentences read 3 times each (e.g. 3 subjects)
    src = ArrayBatches({"g": groups, "i": np.arange(33)}, batch_size=5, groups=groups)
    batches = _batches(src)
    assert len(batches) == 33 // 5
    assert all(len(set(b.tolist())) == len(b) == 5 for b in batches)
    order = src.order(0).numpy()
    assert sorted(order.tolist()) == list(range(33))  # a permutation: nothing dropped or doubled
    # seeded: the same epoch gives the same order, another epoch another
    assert np.array_equal(order, src.order(0).numpy()) and not np.array_equal(order, src.order(1).numpy())


def test_without_groups_duplicates_do_occur_so_the_test_above_is_not_vacuous():
    groups = np.repeat(np.arange(11), 3)
    src = ArrayBatches({"g": groups}, batch_size=5)
    assert any(len(set(b.tolist())) < 5 for e in range(5) for b in _batches(src, epoch=e))


def test_impossible_grouping_still_yields_every_sample_once():
    groups = np.array([0, 0, 0, 0, 1, 1])  # 2 groups, batches of 3: duplicates cannot be avoided
    src = ArrayBatches({"g": groups}, batch_size=3, groups=groups)
    assert sorted(src.order(0).numpy().tolist()) == list(range(6))


def test_groups_length_is_checked():
    with pytest.raises(ValueError, match="groups"):
        ArrayBatches({"g": np.arange(4)}, batch_size=2, groups=[0, 1])
