"""Top-1 and top-k through block maxima (akl_core._topk) against torch's max and topk."""

from __future__ import annotations

import pytest
import torch

from akl_core import _topk
from akl_core._dists import make_dists

# multiples of the block, a remainder of 1 and of BLOCK - 1, a remainder holding the maximum
VOCABS = [2048, 2049, 2048 + _topk.BLOCK - 1, 5000, 6144]


def _rows(vocab: int, seed: int, rows: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g) * 3
    x[0, -1] += 40  # the maximum in the last entry (the remainder block, if any)
    x[1, :70] += 20  # the top 64 packed into the first entries
    x[2, torch.arange(0, vocab, vocab // 80)[:70]] += 20  # spread over many blocks
    return x


@pytest.mark.parametrize("vocab", VOCABS)
def test_top1_index_is_the_argmax(vocab):
    x = _rows(vocab, seed=vocab)
    assert _topk.uses_blocks(vocab)
    assert torch.equal(_topk.top1_index(x), x.argmax(-1))
    assert torch.equal(_topk.top1_index(x, _topk.block_maxima(x)), x.argmax(-1))


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("k", [1, 7, 64])
def test_topk_rows_equals_torch_topk(vocab, k):
    x = _rows(vocab, seed=vocab + k)
    values, indices = _topk.topk_rows(x, k)
    expected = torch.topk(x, k, dim=-1)
    assert torch.equal(values, expected.values)
    assert torch.equal(indices, expected.indices)  # no ties in random floats
    rows = torch.tensor([2, 0, 5, 1])
    for maxima in (None, _topk.block_maxima(x)):
        values, indices = _topk.topk_rows(x, k, rows, maxima)
        expected = torch.topk(x[rows], k, dim=-1)
        assert torch.equal(values, expected.values)
        assert torch.equal(indices, expected.indices)


def test_topk_of_probabilities_from_log_probability_maxima():
    """The maxima of an increasing transform (log-probs) serve the probabilities too."""
    lp = torch.log_softmax(_rows(5000, seed=3), -1)
    p = lp.exp()
    values, indices = _topk.topk_rows(p, 64, None, _topk.block_maxima(lp))
    assert torch.equal(values, torch.topk(p, 64, dim=-1).values)
    assert torch.equal(p.gather(-1, indices), values)


@pytest.mark.parametrize("vocab", [2048, 2049, 5000])
def test_ties_give_the_same_values_and_distinct_entries_holding_them(vocab):
    g = torch.Generator().manual_seed(vocab)
    x = torch.randint(0, 6, (16, vocab), generator=g).float()  # each value ~vocab/6 times
    x[3] = 1.0  # a whole row tied
    x[4, -3:] = 9.0  # tied maxima in the remainder
    values, indices = _topk.topk_rows(x, 64)
    assert torch.equal(values, torch.topk(x, 64, dim=-1).values)
    assert torch.equal(x.gather(-1, indices), values)
    assert all(len(set(row)) == 64 for row in indices.tolist())
    assert torch.equal(x.gather(-1, _topk.top1_index(x).unsqueeze(-1)).squeeze(-1),
                       x.amax(-1))


def test_small_vocabularies_use_torch_directly():
    x = torch.randn(5, 100)
    assert not _topk.uses_blocks(100)
    assert torch.equal(_topk.top1_index(x), x.argmax(-1))
    assert torch.equal(_topk.topk_rows(x, 64)[1], torch.topk(x, 64, dim=-1).indices)


def test_dists_top1_is_the_teachers_most_likely_token():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 8, 5000, generator=g) * 3
    d = make_dists(student, teacher, 1.0, torch.float32)
    assert torch.equal(d.top_idx, teacher.argmax(-1))
    assert torch.equal(d.top_p, d.p.amax(-1))


def test_rows_of_a_wider_buffer_and_non_contiguous_rows():
    x = _rows(5000, seed=9)
    wide = torch.zeros(24, 5100)
    wide[:, 50:5050] = x
    view = wide[:, 50:5050]  # rows with a stride larger than their length
    assert torch.equal(_topk.block_maxima(view), _topk.block_maxima(x))
    assert torch.equal(_topk.topk_rows(view, 64)[1], torch.topk(x, 64, dim=-1).indices)
    transposed = x.t().contiguous().t()  # column-major
    assert torch.equal(_topk.top1_index(transposed), x.argmax(-1))
