"""fused_linear_distillation_loss against the naive path: matmul + distillation_loss (+ CE)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import akl_core
from akl_core import fused
from tests import reference as ref

N_SHAPE, H, HT, V = (3, 8), 6, 5, 37  # 24 positions; V prime so it is never another size
LOSS_PARAMS = [(name, {}) for name in akl_core.LOSSES] + [
    ("akl", {"mu": 0.3, "boundary": "paper"}), ("jsd", {"beta": 0.2}), ("ab", {"alpha": 0.2})]


def _inputs(seed=0, dtype=torch.float64, bias=True, vocab=V):
    g = torch.Generator().manual_seed(seed)
    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    x = {
        "h": rnd(*N_SHAPE, H), "w": rnd(vocab, H, scale=0.8),
        "b": rnd(vocab, scale=0.5) if bias else None,
        "th": rnd(*N_SHAPE, HT), "tw": rnd(V, HT, scale=1.2), "tb": rnd(V, scale=0.5),
    }
    x["t"] = (x["th"] @ x["tw"].T + x["tb"])
    labels = torch.randint(0, V, N_SHAPE, generator=g)
    labels[0, :3] = -100
    labels[2, 5] = -100
    mask = torch.ones(N_SHAPE, dtype=torch.bool)
    mask[1, 2:4] = False
    x["labels"], x["mask"] = labels, mask
    return x


def _leaves(x):
    return [x[k].clone().requires_grad_(True) if x[k] is not None else None for k in ("h", "w", "b")]


def _naive(h, w, b, teacher, loss, params, *, labels=None, mask=None, hard_weight=0.0,
           temperature=1.0, reduction="mean", num_items=None, vocab_size=None):
    """Whole logits, then distillation_loss and F.cross_entropy with the same masking."""
    z = h @ w.T + (b if b is not None else 0)
    if vocab_size is not None:
        z, teacher = z[..., :vocab_size], teacher[..., :vocab_size]
    kd = akl_core.distillation_loss(z, teacher, loss=loss, labels=labels, mask=mask,
                                    temperature=temperature, reduction="none", **params)
    per = (1 - hard_weight) * kd
    valid = torch.ones(z.shape[:-1], dtype=torch.bool)
    if labels is not None:
        valid &= labels != -100
    if mask is not None:
        valid &= mask
    if hard_weight > 0:
        ce = F.cross_entropy(z.reshape(-1, z.shape[-1]).double(), labels.reshape(-1),
                             reduction="none", ignore_index=-100).reshape(valid.shape)
        per = per + hard_weight * torch.where(valid, ce, 0.0).to(per.dtype)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (num_items if num_items is not None else valid.sum())


def _compare(x, name, params, *, teacher_kind, rtol=1e-9, atol=1e-11, **kw):
    h, w, b = _leaves(x)
    teacher_args = ({"teacher_logits": x["t"]} if teacher_kind == "logits" else
                    {"teacher_hidden": x["th"], "teacher_weight": x["tw"], "teacher_bias": x["tb"]})
    out = akl_core.fused_linear_distillation_loss(h, w, student_bias=b, loss=name, **teacher_args,
                                                  **kw, **params)
    h2, w2, b2 = _leaves(x)
    naive_kw = {k: v for k, v in kw.items() if k != "chunk_size"}
    expected = _naive(h2, w2, b2, x["t"], name, params, **naive_kw)
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    seed = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    leaves = [t for t in (h, w, b) if t is not None]
    leaves2 = [t for t in (h2, w2, b2) if t is not None]
    got = torch.autograd.grad(out, leaves, seed)
    want = torch.autograd.grad(expected, leaves2, seed)
    for label, a, c in zip(("hidden", "weight", "bias"), got, want):
        assert a.dtype == c.dtype
        torch.testing.assert_close(a, c, rtol=rtol, atol=atol, msg=lambda m, label=label: f"{label}: {m}")


@pytest.mark.parametrize("teacher_kind", ["logits", "hidden"])
@pytest.mark.parametrize("name,params", LOSS_PARAMS, ids=[f"{n}-{p}" for n, p in LOSS_PARAMS])
def test_matches_naive_matmul_and_distillation_loss(name, params, teacher_kind):
    x = _inputs(seed=1)
    for chunk_size in (1, 5, 24, 1000):
        for reduction in ("mean", "sum", "none"):
            _compare(x, name, params, teacher_kind=teacher_kind, labels=x["labels"],
                     mask=x["mask"], reduction=reduction, temperature=1.7, hard_weight=0.25,
                     chunk_size=chunk_size)
    # no labels, no mask, no bias, default chunk, pure KD
    _compare(_inputs(seed=2, bias=False), name, params, teacher_kind=teacher_kind)


@pytest.mark.parametrize("hard_weight", [0.0, 0.6, 1.0])
def test_num_items_and_hard_weight(hard_weight):
    x = _inputs(seed=3)
    for num_items in (7.5, torch.tensor(40)):
        _compare(x, "akl", {}, teacher_kind="logits", labels=x["labels"], num_items=num_items,
                 hard_weight=hard_weight, chunk_size=4)


def test_hard_weight_one_is_cross_entropy_and_value_matches_oracle():
    x = _inputs(seed=4)
    valid = x["labels"] != -100
    z = x["h"] @ x["w"].T + x["b"]
    out = akl_core.fused_linear_distillation_loss(x["h"], x["w"], student_bias=x["b"],
                                                  teacher_logits=x["t"], labels=x["labels"],
                                                  hard_weight=1.0, chunk_size=5)
    ce = F.cross_entropy(z[valid], x["labels"][valid])
    torch.testing.assert_close(out, ce, rtol=1e-12, atol=1e-12)
    # KD part against the independent float64 oracle (tests/reference.py), at T = 2
    out = akl_core.fused_linear_distillation_loss(x["h"], x["w"], student_bias=x["b"],
                                                  teacher_logits=x["t"], loss="akl", mask=valid,
                                                  temperature=2.0, chunk_size=3)
    expected = ref.reference_value("akl", z[valid], x["t"][valid], temperature=2.0).mean()
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-12)


def test_vocab_size_cuts_a_padded_student_head():
    x = _inputs(seed=5, vocab=V + 4)  # the student's lm_head has 4 padding rows
    for teacher_kind in ("logits", "hidden"):
        _compare(x, "fkl", {}, teacher_kind=teacher_kind, labels=x["labels"], hard_weight=0.5,
                 vocab_size=V, chunk_size=7)
        h, w, b = _leaves(x)
        akl_core.fused_linear_distillation_loss(h, w, student_bias=b, teacher_logits=x["t"],
                                                vocab_size=V).backward()
        assert (w.grad[V:] == 0).all() and (b.grad[V:] == 0).all()


@pytest.mark.parametrize("name,params", [("fkl", {}), ("jsd", {"beta": 0.3}), ("ab", {}),
                                         ("tvd", {})])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64(name, params, reduction):
    g = torch.Generator().manual_seed(6)
    h = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64, generator=g)
    labels = torch.tensor([1, -100, 6, 0, 3])
    def fn(h, w, b):
        return akl_core.fused_linear_distillation_loss(
            h, w, student_bias=b, teacher_logits=t, loss=name, labels=labels, hard_weight=0.3,
            temperature=1.3, reduction=reduction, chunk_size=2, **params)
    assert torch.autograd.gradcheck(fn, (h, w, b))


class _Shapes(TorchDispatchMode):
    """Records the shape of every freshly allocated tensor (views and in-place ops skipped)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves(
            (args, kwargs)) if isinstance(a, torch.Tensor)]
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("teacher_kind", ["logits", "hidden"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_tensor_larger_than_a_chunk_of_logits_is_materialised(teacher_kind, reduction):
    x = _inputs(seed=7, dtype=torch.float32)
    h, w, b = _leaves(x)
    teacher = ({"teacher_logits": x["t"]} if teacher_kind == "logits" else
               {"teacher_hidden": x["th"], "teacher_weight": x["tw"], "teacher_bias": x["tb"]})
    chunk = 4
    with _Shapes() as rec:
        out = akl_core.fused_linear_distillation_loss(
            h, w, student_bias=b, loss="akl", labels=x["labels"], hard_weight=0.3,
            reduction=reduction, chunk_size=chunk, **teacher)
        out.sum().backward()
    vocab_sized = [s for s in rec.shapes if V in s and s not in ((V, H), (V, HT), (V,))]
    assert vocab_sized, "the recorder saw no logits at all"
    # The kernels keep a few [buffers, rows, V] work buffers of one chunk each: what must never
    # appear is a run of more than `chunk` rows of logits.
    rows = [s[-2] if s[-1] == V and len(s) >= 2 else torch.Size(s).numel() // V
            for s in vocab_sized]
    too_big = [s for s, r in zip(vocab_sized, rows) if r > chunk]
    assert not too_big, f"tensors larger than {chunk} rows of logits: {too_big}"
    assert max(rows) == chunk


def test_only_valid_rows_are_computed_in_chunks(monkeypatch):
    seen = []
    real = fused.distillation_loss
    def spy(student, teacher, **kw):
        seen.append(student.shape[0])
        return real(student, teacher, **kw)
    monkeypatch.setattr(fused, "distillation_loss", spy)
    x = _inputs(seed=8)
    valid = (x["labels"] != -100) & x["mask"]
    akl_core.fused_linear_distillation_loss(x["h"], x["w"], teacher_logits=x["t"],
                                            labels=x["labels"], mask=x["mask"], chunk_size=5)
    assert sum(seen) == int(valid.sum()) and max(seen) == 5


def test_all_positions_masked_gives_zero_and_zero_gradients():
    x = _inputs(seed=9)
    h, w, b = _leaves(x)
    out = akl_core.fused_linear_distillation_loss(
        h, w, student_bias=b, teacher_logits=x["t"], labels=torch.full(N_SHAPE, -100),
        hard_weight=0.5)
    out.backward()
    assert out.item() == 0.0
    assert (h.grad == 0).all() and (w.grad == 0).all() and (b.grad == 0).all()


def test_teacher_gets_no_gradient_and_no_grad_does_no_gradient_work(monkeypatch):
    x = _inputs(seed=10)
    h = x["h"].clone().requires_grad_(True)
    th, tw = x["th"].clone().requires_grad_(True), x["tw"].clone().requires_grad_(True)
    akl_core.fused_linear_distillation_loss(h, x["w"], teacher_hidden=th,
                                            teacher_weight=tw).backward()
    assert h.grad is not None and th.grad is None and tw.grad is None
    seen = []
    real = fused.distillation_loss
    def spy(student, teacher, **kw):
        seen.append(student.requires_grad)
        return real(student, teacher, **kw)
    monkeypatch.setattr(fused, "distillation_loss", spy)
    with torch.no_grad():
        value = akl_core.fused_linear_distillation_loss(h, x["w"], teacher_logits=x["t"])
    assert not value.requires_grad and seen and not any(seen)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matmul_in_input_dtype_gradients_in_parameter_dtypes(dtype):
    x = _inputs(seed=11, dtype=torch.float32)
    h, w, b = (x[k].to(dtype).requires_grad_(True) for k in ("h", "w", "b"))
    out = akl_core.fused_linear_distillation_loss(h, w, student_bias=b, teacher_logits=x["t"],
                                                  labels=x["labels"], hard_weight=0.3,
                                                  chunk_size=5)
    out.backward()
    assert out.dtype == torch.float32
    assert h.grad.dtype == w.grad.dtype == b.grad.dtype == dtype
    # the same rounded inputs through the naive path in float32
    h2, w2, b2 = (t.detach().float().requires_grad_(True) for t in (h, w, b))
    z = torch.addmm(b, h.reshape(-1, H), w.T).detach().float().reshape(*N_SHAPE, V)
    z.requires_grad_(True)  # the logits rounded to `dtype` once, like the fused chunks
    expected = _naive_from_logits(z, x["t"], x["labels"], 0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    (gz,) = torch.autograd.grad(expected, z)
    for got, want in ((h.grad, gz @ w2.detach()), (w.grad, gz.reshape(-1, V).T @
                                                   h2.detach().reshape(-1, H))):
        rel = (got.float() - want).norm() / want.norm()
        assert rel < 1e-2, rel


def _naive_from_logits(z, t, labels, hard_weight):
    kd = akl_core.distillation_loss(z, t, loss="akl", labels=labels)
    valid = labels != -100
    return (1 - hard_weight) * kd + hard_weight * F.cross_entropy(z[valid], labels[valid])


class _FakeSparse:
    """Duck-typed stand-in for akl_core.SparseTeacher (indices, logprobs, tail)."""

    def __init__(self, indices, logprobs, tail="bucket"):
        self.indices, self.logprobs, self.tail = indices, logprobs, tail


def test_sparse_teacher_is_sliced_per_chunk(monkeypatch):
    seen = []
    def spy(student, teacher, **kw):
        seen.append(teacher)
        return student.sum(-1) * 0
    monkeypatch.setattr(fused, "distillation_loss", spy)
    x = _inputs(seed=12)
    k = 4
    indices = torch.arange(24 * k).reshape(*N_SHAPE, k) % V
    logprobs = -torch.arange(24 * k, dtype=torch.float64).reshape(*N_SHAPE, k)
    sparse = _FakeSparse(indices, logprobs, tail="renormalize")
    akl_core.fused_linear_distillation_loss(x["h"], x["w"], teacher_logits=sparse,
                                            mask=x["mask"], chunk_size=3)
    rows = x["mask"].reshape(-1).nonzero().squeeze(-1)
    assert all(type(t) is _FakeSparse and t.tail == "renormalize" for t in seen)
    torch.testing.assert_close(torch.cat([t.indices for t in seen]), indices.reshape(-1, k)[rows])
    torch.testing.assert_close(torch.cat([t.logprobs for t in seen]), logprobs.reshape(-1, k)[rows])
    assert max(t.indices.shape[0] for t in seen) == 3


def _bad(**override):
    x = _inputs(seed=13, dtype=torch.float32)
    kw = {"student_hidden": x["h"], "student_weight": x["w"], "teacher_logits": x["t"]}
    kw.update(override)
    return kw


BAD = [
    (_bad(student_weight=torch.randn(H, V)), "student_weight has shape .* not its transpose"),
    (_bad(student_weight=torch.randn(V, H, dtype=torch.float64)), "student_weight is torch.float64"),
    (_bad(student_hidden=torch.ones(*N_SHAPE, H, dtype=torch.long)), "student_hidden must be float"),
    (_bad(student_bias=torch.randn(V + 1)), "student_bias has 38 entries"),
    (_bad(teacher_logits=torch.randn(3, 7, V)), "teacher_logits has shape"),
    (_bad(teacher_logits=torch.randn(*N_SHAPE, V + 2)), "vocabulary size mismatch.*vocab_size"),
    (_bad(teacher_logits=None), "the teacher is missing"),
    (_bad(teacher_hidden=torch.randn(*N_SHAPE, HT)), "EITHER as teacher_logits OR"),
    (_bad(teacher_logits=None, teacher_hidden=torch.randn(*N_SHAPE, HT),
          teacher_weight=torch.randn(V, HT + 1)), "teacher_weight has shape"),
    (_bad(teacher_logits=None, teacher_hidden=torch.randn(2, 8, HT),
          teacher_weight=torch.randn(V, HT)), "teacher_hidden has positions"),
    (_bad(teacher_logits=None, teacher_hidden=torch.randn(*N_SHAPE, HT)), "the teacher is missing"),
    (_bad(teacher_logits=torch.randn(*N_SHAPE, V, device="meta")), "teacher_logits is on meta"),
    (_bad(hard_weight=0.5), "hard_weight > 0 needs labels"),
    (_bad(hard_weight=1.5), "hard_weight must be a number in"),
    (_bad(hard_weight=0.5, labels=torch.full(N_SHAPE, V)), r"labels must lie in \[0, 37\)"),
    (_bad(hard_weight=0.5, labels=torch.zeros(N_SHAPE)), "labels must be integer"),
    (_bad(labels=torch.zeros(3, 7, dtype=torch.long)), "labels has shape"),
    (_bad(chunk_size=0), "chunk_size must be a positive int"),
    (_bad(reduction="batchmean"), "reduction must be one of"),
    (_bad(loss="kl"), "unknown loss"),
    (_bad(loss="akl", beta=0.5), "unknown parameter"),
    (_bad(temperature=0), "temperature must be"),
    (_bad(num_items=0), "num_items must be > 0"),
    (_bad(vocab_size=V + 1), "vocab_size=38 exceeds"),
]


@pytest.mark.parametrize("kwargs,match", BAD, ids=[m for _, m in BAD])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        akl_core.fused_linear_distillation_loss(**kwargs)
