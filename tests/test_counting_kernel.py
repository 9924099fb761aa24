"""The counting kernel's candidate step (workflow.retrieval.kernel, issue 21):
only items at or below a row's last threshold are binned, with bins sized
by the candidates, and thresholds that are items are ranked among them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workflow.retrieval.kernel as kernel
from workflow.retrieval.kernel import at_or_below, count_at_or_before, sort_thresholds


def test_at_or_below_gives_the_entries_at_or_below_each_row_limit():
    rng = np.random.default_rng(3)
    dist = torch.from_numpy(rng.integers(-3, 4, (5, 17)).astype(np.float32))
    dist[0, ::3] = float("inf")
    dist[2, 1] = -float("inf")
    dist[3, 4] = -0.0
    limit = torch.tensor([[0.0], [float("inf")], [-float("inf")], [0.0], [3.0]])
    mask = np.empty(
        (8, 17), dtype=bool
    )  # more rows than needed: the first five are used
    for buffer in (None, mask):
        at, value, repeat = at_or_below(dist, limit, buffer)
        expected_row, expected_col = (dist <= limit).nonzero(as_tuple=True)
        row, col = at // dist.shape[1], at % dist.shape[1]
        assert torch.equal(row, expected_row) and torch.equal(col, expected_col)
        assert torch.equal(value, dist[expected_row, expected_col])
        per_row = torch.arange(5) * 10 + 1
        assert torch.equal(repeat(per_row), per_row[expected_row])


@pytest.mark.parametrize("candidates_per_threshold", [64, 1])
def test_thresholds_that_are_items_get_their_ranks(
    monkeypatch, candidates_per_threshold
):
    # Many candidates per row (bins sized by them when CANDIDATES_PER_THRESHOLD
    # is 1), ties between thresholds and other items, and the thresholds taken
    # from the items themselves: each gets its 1-based rank in (distance,
    # index) order.
    monkeypatch.setattr(kernel, "CANDIDATES_PER_THRESHOLD", candidates_per_threshold)
    monkeypatch.setitem(kernel.BLOCK_ENTRIES, "cpu", 400)
    rng = np.random.default_rng(7)
    b, k_items, t = 7, 300, 6
    dist = torch.from_numpy(rng.integers(0, 40, (b, k_items)).astype(np.float32))
    dist[4] = 5.0  # one row of equal distances
    item_index = torch.from_numpy(rng.permutation(1000)[:k_items])
    cols = torch.from_numpy(
        np.stack([rng.choice(k_items, t, replace=False) for _ in range(b)])
    )
    n_thr = torch.tensor([6, 0, 1, 3, 6, 2, 5])
    valid = torch.arange(t) < n_thr[:, None]
    thr, thr_index, _ = sort_thresholds(dist.gather(1, cols), item_index[cols], valid)
    got = count_at_or_before(dist, thr, thr_index, n_thr, item_index=item_index)
    keys = [sorted(zip(dist[r].tolist(), item_index.tolist())) for r in range(b)]
    for r in range(b):
        for k in range(t):
            expected = (
                keys[r].index((float(thr[r, k]), int(thr_index[r, k]))) + 1
                if k < n_thr[r]
                else 0
            )
            assert got[r, k] == expected, (r, k)
