"""The row dot products every kernel's value rests on (akl_core._dists.rowdot, rowdot_pair)."""

import pytest
import torch

from akl_core._dists import BUFFERS, make_dists, rowdot, rowdot_pair, rowdot_two, stacked


def _dists(rows: int = 7, vocab: int = 1000, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(rows, vocab, generator=g, dtype=dtype) * 3
    t = torch.randn(rows, vocab, generator=g, dtype=dtype) * 3
    return make_dists(s, t, 1.0, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rowdot_matches_a_float64_sum(dtype: torch.dtype) -> None:
    d = _dists(dtype=dtype)
    expected = (d.q.double() * d.lq.double()).sum(-1)
    got = rowdot(d.q, d.lq)
    assert got.shape == (7,) and got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, rtol=1e-5 if dtype == torch.float32
                               else 1e-12, atol=0)


def test_rowdot_pair_matches_two_rowdots_stacked_or_not() -> None:
    d = _dists()
    assert stacked(d.q, d.p) is not None  # make_dists lays q and p out as one buffer
    a, b = rowdot_pair(d.q, d.p, d.lq)
    loose_q, loose_p = d.q.clone(), d.p.clone()  # separate storages: two GEMMs
    assert stacked(loose_q, loose_p) is None
    c, e = rowdot_pair(loose_q, loose_p, d.lq)
    for got, first in ((a, d.q), (b, d.p), (c, d.q), (e, d.p)):
        torch.testing.assert_close(got.double(), (first.double() * d.lq.double()).sum(-1),
                                   rtol=1e-5, atol=0)


def test_rowdot_takes_non_contiguous_rows() -> None:
    d = _dists(rows=8)
    a, b = d.q[::2], d.lq[::2]
    torch.testing.assert_close(rowdot(a, b).double(), (a.double() * b.double()).sum(-1),
                               rtol=1e-5, atol=0)
    assert BUFFERS == 4


def test_rowdot_two_matches_two_rowdots_in_one_gemm_or_two() -> None:
    d = _dists()
    part = make_dists(d.lq[:3], d.lp[:3], 1.0, torch.float32,
                      buffers=torch.empty(BUFFERS, 5, 1000)[:, :3])  # a short last chunk
    for dd in (d, part):  # one GEMM over 2R rows; two where the slots are not back to back
        a, b = rowdot_two(dd.q, dd.lq, dd.p, dd.lp)
        for got, x, y in ((a, dd.q, dd.lq), (b, dd.p, dd.lp)):
            torch.testing.assert_close(got.double(), (x.double() * y.double()).sum(-1),
                                       rtol=1e-5, atol=0)
