"""Batch planning: every text exactly once, longest first, within count and token budgets, and
enough batches for every worker."""

from __future__ import annotations

import numpy as np
import pytest
from embedrt.engine import plan_batches
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 600), max_size=300), batch_size=st.integers(1, 64),
       budget=st.one_of(st.none(), st.integers(1, 20000)), workers=st.integers(1, 4))
def test_plan_covers_everything_within_budgets(lengths, batch_size, budget, workers):
    arr = np.asarray(lengths, dtype=np.int64)
    batches = plan_batches(arr, batch_size, budget, min_batches=workers)
    assert len(batches) >= min(workers, len(lengths))
    flat = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert np.all(np.diff(arr[flat]) <= 0) if len(flat) else True
    for b in batches:
        assert 1 <= len(b) <= batch_size
        if budget is not None and len(b) > 1:
            assert len(b) * max(int(arr[b].max()), 1) <= budget


def test_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(np.array([1, 2]), 0)


def test_short_call_is_split_for_the_workers():
    lengths = np.array([5, 9, 7, 30])
    assert [b.tolist() for b in plan_batches(lengths, 32)] == [[3, 1, 2, 0]]
    assert [b.tolist() for b in plan_batches(lengths, 32, min_batches=2)] == [[3, 1], [2, 0]]
    assert [b.tolist() for b in plan_batches(lengths, 32, min_batches=3)] == [[3], [1], [2, 0]]
