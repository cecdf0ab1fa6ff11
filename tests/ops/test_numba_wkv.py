"""The fused numba Bi-WKV kernels against the O(T^2) float64 definition (paper Eq. 8) and the torch backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_rwkv.ops import bi_wkv, bi_wkv_at, bi_wkv_quadratic

from .compile_checks import assert_compiled_like_eager

numba = pytest.importorskip("numba")

import monai_rwkv.ops.wkv as wkv_mod  # noqa: E402


def _inputs(
    seq_len: int,
    channels: int,
    batch: int,
    seed: int,
    decay_max: float = 60.0,
    k_max: float = 30.0,
    decay_sign: float = 0.0,
) -> tuple[torch.Tensor, ...]:
    """Random (w, u, k, v): |decay|, |first| <= decay_max (sign forced unless decay_sign == 0), |k| <= k_max,
    values spanning six orders of magnitude across channels."""
    g = torch.Generator().manual_seed(seed)
    decay = (torch.rand(channels, generator=g) * 2 - 1) * decay_max
    if decay_sign:
        decay = decay.abs() * decay_sign
    first = (torch.rand(channels, generator=g) * 2 - 1) * decay_max
    k = (torch.rand(batch, seq_len, channels, generator=g) * 2 - 1) * k_max
    scale = 10.0 ** (torch.rand(channels, generator=g) * 6 - 3)
    v = torch.randn(batch, seq_len, channels, generator=g) * scale
    return decay / seq_len, first / seq_len, k, v


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
@pytest.mark.parametrize("seq_len", [1, 2, 3, 17, 256, 1024])
def test_forward_matches_quadratic_reference(seq_len: int, decay_sign: float, seed: int) -> None:
    w, u, k, v = _inputs(seq_len, channels=5 if seq_len > 256 else 11, batch=2, seed=seed, decay_sign=decay_sign)
    ref = bi_wkv_quadratic(w, u, k, v)
    out = bi_wkv(w, u, k, v, backend="numba")
    assert out.dtype == torch.float32 and out.shape == v.shape
    assert _rel_err(out, ref) <= 1e-5
    out64 = bi_wkv(w.double(), u.double(), k.double(), v.double(), backend="numba")
    assert out64.dtype == torch.float64
    assert _rel_err(out64, ref) <= 1e-12


def test_far_beyond_float64_range_of_fixed_shifts(seed: int) -> None:
    """|decay| = 2000 and |k| = 300: exponent spreads of thousands, still exact thanks to the running maximum."""
    w, u, k, v = _inputs(300, channels=6, batch=1, seed=seed, decay_max=2000.0, k_max=300.0)
    w[::2] = -w[::2].abs()
    out = bi_wkv(w.double(), u.double(), k.double(), v.double(), backend="numba")
    assert torch.isfinite(out).all()
    assert _rel_err(out, bi_wkv_quadratic(w, u, k, v)) <= 1e-12


def test_long_sequence_against_reference_rows(seed: int) -> None:
    """T = 2048 x 2048: compare sampled output rows with the direct formula."""
    seq_len, channels = 2048 * 2048, 3
    w, u, k, v = _inputs(seq_len, channels, batch=1, seed=seed)
    out = bi_wkv(w, u, k, v, backend="numba")
    assert torch.isfinite(out).all()
    rows = torch.randint(0, seq_len, (6,)).tolist() + [0, 1, seq_len - 1]
    for t in rows:
        ref = bi_wkv_at(w, u, k, v, t)
        err = ((out[0, t].double() - ref).abs() / v.double()[0].abs().amax(0)).max().item()
        assert err <= 1e-5, (t, err)


def _grads(fn, args: tuple[torch.Tensor, ...], grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    args = tuple(x.detach().requires_grad_() for x in args)
    return torch.autograd.grad((fn(*args) * grad_out).sum(), args)


def _gradients_and_scales(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Float64 gradients ``(grad_w, grad_u, grad_k, grad_v)`` of ``sum(g * bi_wkv)`` from the explicit softmax
    weights ``alpha[b, c, t, i]`` (O(T^2)), and for each gradient element the sum of the absolute values of its
    terms (``sum_t alpha |g_t| (|v_i| + |out_t|)`` for grad_k, and so on): the scale a rounding error of the
    inputs to those sums is relative to. Sums that cancel (saturated softmax: out_t ~ v_i) can only be as
    accurate as that scale allows."""
    w, u, k, v, g = (x.double() for x in (w, u, k, v, g))
    seq_len = k.shape[1]
    pos = torch.arange(seq_len, dtype=torch.float64)
    dist = (pos[:, None] - pos[None, :]).abs()
    eye = torch.eye(seq_len, dtype=torch.bool)
    kt, vt, gt = (x.permute(0, 2, 1) for x in (k, v, g))  # (B, C, T)
    logits = kt[:, :, None, :] - (dist - 1) * w[:, None, None]  # (B, C, t, i)
    logits = torch.where(eye, torch.diag_embed(u[:, None] + kt), logits)
    alpha = torch.softmax(logits, dim=-1)
    out = (alpha * vt[:, :, None, :]).sum(-1)  # (B, C, t)
    diff = vt[:, :, None, :] - out[..., None]  # v_i - out_t
    size = vt.abs()[:, :, None, :] + out.abs()[..., None]
    ag, aag = alpha * gt[..., None], alpha * gt.abs()[..., None]
    weight = torch.where(eye, 0.0, dist - 1)
    grads = (
        -(ag * weight * diff).sum((0, 2, 3)),
        (torch.diagonal(ag * diff, dim1=-2, dim2=-1)).sum((0, 2)),
        (ag * diff).sum(2).permute(0, 2, 1),
        ag.sum(2).permute(0, 2, 1),
    )
    scales = (
        (aag * weight * size).sum((0, 2, 3)),
        (torch.diagonal(aag * size, dim1=-2, dim2=-1)).sum((0, 2)),
        (aag * size).sum(2).permute(0, 2, 1),
        aag.sum(2).permute(0, 2, 1),
    )
    return grads, scales


# Gradients from float32 kernels, relative to each element's scale: an exponent x (keys, decays and bonus combined)
# computed in float32 is off by up to |x| 2^-24, and e^x by that relative amount; with the fast path's float32
# range (30) and keys up to 30, |x| <= 60: 60 * 2^-24 = 3.6e-6 per exponential. Measured: at most 1.2e-6
# over 1,200 random inputs of test_fast_backward_matches_quadratic; one seed of CI (184491050) reached 2.07e-6.
FLOAT32_GRAD_TOL = 4e-6


def _assert_gradients_within(
    ours: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...], scales: tuple[torch.Tensor, ...], tol: float
) -> None:
    """Each element within ``tol`` of its scale, plus 1e-9 of its channel's largest scale (terms that underflow
    the arithmetic's range; the fast path's float32 chunks lose terms below e^-87 times factors up to e^60)."""
    for name, a, b, s in zip("wukv", ours, ref, scales):
        assert torch.isfinite(a).all(), name
        floor = 1e-9 * (s.amax(dim=(0, 1)) if s.dim() == 3 else s.max())
        worst = ((a.double() - b).abs() / (s + floor).clamp_min(1e-300)).max().item()  # T = 1: grad_w 0 / 0
        assert worst <= tol, (name, worst)


@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
@pytest.mark.parametrize("seq_len", [1, 2, 17, 300])
def test_gradients_match_quadratic_float64(seq_len: int, decay_sign: float, seed: int) -> None:
    """Keys of +-30 saturate the softmax: out_t ~ v_i makes grad_k's and grad_w's sums cancel, so each element
    is checked against the sum of the absolute values of its terms (see _gradients_and_scales)."""
    args = tuple(x.double() for x in _inputs(seq_len, channels=7, batch=2, seed=seed, decay_sign=decay_sign))
    grad_out = torch.randn(2, seq_len, 7, dtype=torch.float64)
    ours = _grads(lambda *a: bi_wkv(*a, backend="numba"), args, grad_out)
    assert all(a.dtype == torch.float64 for a in ours)
    explicit, scales = _gradients_and_scales(*args, grad_out)
    _assert_gradients_within(ours, explicit, scales, 1e-12)
    # the helper's explicit weights against autograd of the definition, to the same scales
    _assert_gradients_within(_grads(bi_wkv_quadratic, args, grad_out), explicit, scales, 1e-12)


def test_gradients_float32_inputs(seed: int) -> None:
    """float32 inputs (fast path where it applies, else running-maximum kernels): every element within
    FLOAT32_GRAD_TOL of its scale. Measured against each gradient's largest value instead, grad_w of saturated
    channels is off by up to ~1e-4 on the fast path, whose float32 chunk terms p v carry rounding that the
    cancellation amplifies."""
    args = _inputs(400, channels=9, batch=2, seed=seed)
    grad_out = torch.randn(2, 400, 9)
    ours = _grads(lambda *a: bi_wkv(*a, backend="numba"), args, grad_out)
    assert all(a.dtype == torch.float32 for a in ours)
    _assert_gradients_within(ours, *_gradients_and_scales(*args, grad_out), FLOAT32_GRAD_TOL)


def test_gradcheck_float64(seed: int) -> None:
    args = tuple(x.double().requires_grad_() for x in _inputs(9, channels=3, batch=2, seed=seed, k_max=3))
    assert torch.autograd.gradcheck(lambda *a: bi_wkv(*a, backend="numba"), args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype, seed: int) -> None:
    w, u, k, v = _inputs(200, channels=6, batch=2, seed=seed, decay_max=10, k_max=5)
    k, v = k.to(dtype).requires_grad_(), v.to(dtype).requires_grad_()
    out = bi_wkv(w, u, k, v, backend="numba")
    assert out.dtype == dtype
    assert _rel_err(out, bi_wkv_quadratic(w, u, k, v)) <= (1e-3 if dtype == torch.float16 else 8e-3)
    out.float().sum().backward()
    assert k.grad.dtype == dtype and v.grad.dtype == dtype
    assert torch.isfinite(k.grad.float()).all() and torch.isfinite(v.grad.float()).all()


def test_channel_blocks_and_batches_agree_with_float64(seed: int) -> None:
    """Several channel blocks, one of them partial, and batch > 1: one channel beyond the float32 fast path's range
    sends the call to blocks of at most 64 channels (its block through the running-maximum kernels, the others
    through the fast path). Forward against the pure path; gradients against float64 to each element's scale
    (grad_w is a signed sum over B T^2 terms: measured against its largest value, 1.8e-5 was seen; against the
    scale, the worst of 60 seeds was 5.9e-7 for grad_k and grad_v)."""
    w, u, k, v = _inputs(300, channels=77, batch=2, seed=seed, decay_max=20.0, k_max=8.0)
    w[50] = 2.0  # |w| * 64 + |u| > _FAST_RANGE32
    shape, fast_range = tuple(k.shape), kernels._FAST_RANGE32
    assert kernels._block_size(w.double().numpy(), u.double().numpy(), shape, fast_range) < 77
    # the fast path's float32 chunks: ~2e-6 of each channel's largest output (worst of 60 seeds: 1.03e-6)
    assert _rel_err(bi_wkv(w, u, k, v, backend="numba"), bi_wkv(w, u, k, v, backend="torch")) <= 2e-6
    grad_out = torch.randn(shape)
    ours = _grads(lambda *a: bi_wkv(*a, backend="numba"), (w, u, k, v), grad_out)
    _assert_gradients_within(ours, *_gradients_and_scales(w, u, k, v, grad_out), FLOAT32_GRAD_TOL)


def test_auto_dispatch(seed: int) -> None:
    w, u, k, v = (x.requires_grad_() for x in _inputs(50, channels=4, batch=1, seed=seed))
    assert "bi_wkv_numba" in type(bi_wkv(w, u, k, v).grad_fn).__name__
    assert "bi_wkv_numba" not in type(bi_wkv(w, u, k, v, backend="torch").grad_fn).__name__
    with pytest.raises(ValueError, match="backend"):
        bi_wkv(w, u, k, v, backend="cuda")


def test_gradient_free_eager_calls_run_the_kernels_without_the_custom_op(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Inference skips the custom op's dispatch with bitwise the same result; tracked inputs, dispatch modes and
    fake tensors (shape propagation) still go through the op."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    op_calls: list[int] = []
    custom_op = wkv_mod._numba_forward
    monkeypatch.setattr(wkv_mod, "_numba_forward", lambda *a: op_calls.append(1) or custom_op(*a))
    w, u, k, v = _inputs(700, channels=7, batch=2, seed=seed)
    want = custom_op(w.double(), u.double(), k, v)
    with torch.no_grad():
        assert torch.equal(bi_wkv(w, u, k, v), want) and not op_calls
    with torch.inference_mode():
        assert torch.equal(bi_wkv(w, u, k, v), want) and not op_calls

    class PassThrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), PassThrough():
        assert torch.equal(bi_wkv(w, u, k, v), want) and len(op_calls) == 1
    assert torch.equal(bi_wkv(w, u, k.requires_grad_(), v).detach(), want) and len(op_calls) == 2
    real = [t.detach() for t in (w, u, k, v)]
    with FakeTensorMode() as mode, torch.no_grad():
        fake = bi_wkv(*(mode.from_tensor(t) for t in real))
    assert fake.shape == v.shape and len(op_calls) == 3


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_auto_uses_torch_path_while_tracing(seed: int) -> None:
    w, u, k, v = _inputs(40, channels=4, batch=2, seed=seed, decay_max=5, k_max=5)
    traced = torch.jit.trace(lambda kk, vv: bi_wkv(w, u, kk, vv), (k, v), check_trace=False)
    assert "PythonOp" not in str(traced.graph)
    k2, v2 = torch.randn_like(k), torch.randn_like(v)
    assert torch.allclose(traced(k2, v2), bi_wkv(w, u, k2, v2), rtol=1e-5, atol=1e-6)


def test_missing_numba(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Without numba: auto falls back to torch, forcing numba is a clear error."""
    monkeypatch.setattr(wkv_mod, "_NUMBA", wkv_mod._LazyKernels("monai_rwkv.ops._no_such_kernels"))
    w, u, k, v = (x.requires_grad_() for x in _inputs(30, channels=3, batch=1, seed=seed))
    assert "bi_wkv_numba" not in type(bi_wkv(w, u, k, v).grad_fn).__name__
    with pytest.raises(RuntimeError, match="numba"):
        bi_wkv(w, u, k, v, backend="numba")
    assert wkv_mod.describe_backend("cpu").startswith("torch (pure PyTorch")
    assert "numba could not be imported" in wkv_mod.describe_backend("cpu")


def test_numba_is_installed_and_described_as_the_cpu_backend() -> None:
    """numba is a dependency, not an extra: a default install runs the fused kernels and says so."""
    assert wkv_mod.numba_available()
    assert wkv_mod.describe_backend("cpu") == "numba (fused CPU kernels)"


def test_concurrent_calls_from_python_threads(seed: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cases = [_inputs(300 + 50 * i, channels=5, batch=2, seed=seed + i) for i in range(6)]
    expected = [bi_wkv(*args, backend="numba") for args in cases]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda args: bi_wkv(*args, backend="numba"), cases))
    for got, want in zip(results, expected):
        assert torch.equal(got, want)


# --- fast path (chunk-local stabilisation) and its fallback to the running-maximum kernels ---------------------

import monai_rwkv.ops._numba_wkv as kernels  # noqa: E402


@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
@pytest.mark.parametrize(
    ("seq_len", "channels", "batch"),
    [(1, 48, 2), (63, 48, 1), (64, 48, 3), (65, 384, 1), (1000, 48, 2), (1337, 384, 2), (2049, 5, 3)],
)
def test_fast_path_matches_quadratic_reference(
    seq_len: int, channels: int, batch: int, decay_sign: float, seed: int
) -> None:
    """T = 1, T not a multiple of the chunk, B > 1, C = 48 and 384 (and an odd C), both signs of the decay."""
    w, u, k, v = _inputs(seq_len, channels, batch, seed=seed, decay_sign=decay_sign)
    rows = min(seq_len, max(1, (1 << 22) // (batch * seq_len * channels)))
    ref = bi_wkv_quadratic(w, u, k, v, rows_per_step=rows)
    out = bi_wkv(w, u, k, v, backend="numba")
    assert _rel_err(out, ref) <= 1e-5
    out64 = bi_wkv(w.double(), u.double(), k.double(), v.double(), backend="numba")
    assert _rel_err(out64, ref) <= 1e-12


@pytest.mark.parametrize("k_max", [30.0, 400.0, 2000.0])
@pytest.mark.parametrize("decay", [-60.0, -3.0, 0.0, 3.0, 60.0])
def test_fast_path_wide_key_ranges(decay: float, k_max: float, seed: int) -> None:
    """Key spreads far beyond float64's exponent range inside one chunk and across chunks (bursts of huge keys
    next to tiny ones), which the fast path must stabilise per chunk without losing either side."""
    seq_len, channels = 700, 48
    w, u, k, v = _inputs(seq_len, channels, batch=2, seed=seed, k_max=k_max)
    w = torch.full_like(w, decay / seq_len)
    k[:, 100:130] += k_max  # a burst of very large keys
    k[:, 400:500] -= k_max  # a stretch of very small ones
    assert kernels._FAST_CHUNK and (w.abs() * kernels._FAST_CHUNK + u.abs()).max() <= kernels._FAST_RANGE
    out = bi_wkv(w.double(), u.double(), k.double(), v.double(), backend="numba")
    assert torch.isfinite(out).all()
    assert _rel_err(out, bi_wkv_quadratic(w, u, k, v)) <= 1e-12
    assert _rel_err(bi_wkv(w, u, k, v, backend="numba"), bi_wkv_quadratic(w, u, k.float(), v)) <= 1e-5


@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
def test_fallback_for_extreme_decay_per_chunk(monkeypatch: pytest.MonkeyPatch, decay_sign: float, seed: int) -> None:
    """|w| * chunk beyond the fast path's range: those channel blocks take the running-maximum kernels, the
    others the fast path, in one call; all exact."""
    seq_len, channels = 300, 48
    monkeypatch.setattr(kernels, "_fast_block_size", lambda batch, channels: 24)  # two blocks, one of each
    w, u, k, v = _inputs(seq_len, channels, batch=2, seed=seed, decay_max=2000.0, decay_sign=decay_sign)
    w[:24] = w[:24] / 1000  # first block in range, second (channels 24..47) far outside
    w[24:] = decay_sign * torch.linspace(400.0, 2000.0, 24) / seq_len
    u[:24] = u[:24] / 100
    assert (w[:24].abs() * kernels._FAST_CHUNK + u[:24].abs()).max() <= kernels._FAST_RANGE
    assert (w[24:].abs() * kernels._FAST_CHUNK).min() > kernels._FAST_RANGE
    ref = bi_wkv_quadratic(w, u, k, v)
    out64 = bi_wkv(w.double(), u.double(), k.double(), v.double(), backend="numba")
    assert torch.isfinite(out64).all()
    assert _rel_err(out64, ref) <= 1e-12
    assert _rel_err(bi_wkv(w, u, k, v, backend="numba"), ref) <= 1e-5


@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
def test_float32_fast_path_at_its_range_limit(decay_sign: float, seed: int) -> None:
    """float32 inputs run the fast path's chunks in float32 where ``|w| chunk + |u| <= _FAST_RANGE32``: at that
    limit, with keys of +-80 and bursts (terms underflowing float32 inside a chunk), still within 1e-5; channels
    between the float32 and float64 limits take the running-maximum kernels, also exact."""
    seq_len, channels, chunk = 300, 48, kernels._FAST_CHUNK
    w, u, k, v = _inputs(seq_len, channels, batch=2, seed=seed, k_max=80.0)
    g = torch.Generator().manual_seed(seed + 1)
    share = torch.rand(channels, generator=g)  # split of the range between decay and bonus
    limit = torch.where(
        torch.arange(channels) < 24, kernels._FAST_RANGE32, 0.5 * (kernels._FAST_RANGE32 + kernels._FAST_RANGE)
    )
    w = decay_sign * (1 - share) * limit * 0.999 / chunk
    u = torch.sign(torch.rand(channels, generator=g) - 0.5) * share * limit * 0.999
    k[:, 100:130] += 80.0
    k[:, 200:260] -= 80.0
    ref = bi_wkv_quadratic(w, u, k, v)
    out = bi_wkv(w, u, k, v, backend="numba")
    assert torch.isfinite(out).all()
    # each channel against its own largest value (value scales differ by 1e6 across channels)
    err = ((out.double() - ref).abs().amax(dim=(0, 1)) / ref.abs().amax(dim=(0, 1))).tolist()
    assert max(err[:24]) <= 1e-5  # float32 fast path
    assert max(err[24:]) <= 1e-5  # over the float32 limit: running maximum


def test_float32_fast_path_per_channel_accuracy(seed: int) -> None:
    """Restore-RWKV-like float32 inputs (|w| T, |u| T ~ 10, k ~ N(0, 9)): every channel within 4e-6 of its own
    largest value (seen: <= 1.8e-6 over 20 seeds; multiplying by the float32-rounded decay alone gave up to 1e-5)."""
    g = torch.Generator().manual_seed(seed)
    seq_len, channels = 700, 48
    w = torch.randn(channels, generator=g) * 10 / seq_len
    u = torch.randn(channels, generator=g) * 10 / seq_len
    k = torch.randn(2, seq_len, channels, generator=g) * 3
    v = torch.randn(2, seq_len, channels, generator=g) * 10 ** (torch.rand(channels, generator=g) * 6 - 3)
    ref = bi_wkv_quadratic(w, u, k, v, rows_per_step=128)
    out = bi_wkv(w, u, k, v, backend="numba")
    err = (out.double() - ref).abs().amax(dim=(0, 1)) / ref.abs().amax(dim=(0, 1))
    assert err.max().item() <= 4e-6


def test_fast_path_agrees_with_running_maximum_kernels(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Same inputs through the fast path and (with it switched off) the running-maximum kernels."""
    w, u, k, v = _inputs(5000, 384, batch=2, seed=seed)
    fast = bi_wkv(w.double(), u.double(), k.double(), v.double(), backend="numba")
    monkeypatch.setattr(kernels, "_FAST_CHUNK", 0)
    slow = bi_wkv(w.double(), u.double(), k.double(), v.double(), backend="numba")
    assert _rel_err(fast, slow) <= 1e-12


@pytest.mark.parametrize("k_max", [30.0, 100.0])  # key spreads up to ~400, with bursts
def test_gradients_wide_key_ranges(k_max: float, seed: int) -> None:
    """Backward with bursts of large and small keys: exact against the O(T^2) float64 gradients."""
    seq_len, channels = 300, 16
    w, u, k, v = (x.double() for x in _inputs(seq_len, channels, batch=2, seed=seed, decay_max=30.0, k_max=k_max))
    k[:, 50:70] += k_max
    k[:, 150:220] -= k_max
    grad_out = torch.randn(2, seq_len, channels, dtype=torch.float64)
    ours = _grads(lambda *a: bi_wkv(*a, backend="numba"), (w, u, k, v), grad_out)
    ref = _grads(bi_wkv_quadratic, (w, u, k, v), grad_out)
    for name, a, b in zip("wukv", ours, ref):
        assert torch.isfinite(a).all(), name
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10 * b.abs().max().item()), name


# --- fast-path backward ------------------------------------------------------------------------------------------


def _uses_fast_path(w: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> bool:
    limit = kernels._FAST_RANGE32 if dtype == torch.float32 else kernels._FAST_RANGE
    return bool(kernels._FAST_CHUNK and (w.abs() * kernels._FAST_CHUNK + u.abs()).max() <= limit)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
@pytest.mark.parametrize(("seq_len", "channels", "batch"), [(63, 48, 1), (64, 16, 3), (65, 9, 2), (321, 48, 2)])
def test_fast_backward_matches_quadratic(
    seq_len: int, channels: int, batch: int, decay_sign: float, dtype: torch.dtype, seed: int
) -> None:
    """T shorter than, equal to and just over one chunk, several chunks, B > 1, odd C; both decay signs."""
    w, u, k, v = _inputs(seq_len, channels, batch, seed=seed, decay_max=20.0, decay_sign=decay_sign)
    args = (w.to(dtype), u.to(dtype), k.to(dtype), v.to(dtype))
    assert _uses_fast_path(w, u, dtype)
    grad_out = torch.randn(batch, seq_len, channels, dtype=dtype)
    ours = _grads(lambda *a: bi_wkv(*a, backend="numba"), args, grad_out)
    ref, scales = _gradients_and_scales(*args, grad_out)
    _assert_gradients_within(ours, ref, scales, FLOAT32_GRAD_TOL if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("decay_sign", [-1.0, 1.0])
def test_fast_backward_at_float32_range_limit_with_bursts(decay_sign: float, seed: int) -> None:
    """float32 chunks at ``|w| chunk + |u| = _FAST_RANGE32``, keys +-80 with bursts of +-80 more (saturated
    softmax weights, float32 underflow inside chunks): every gradient element still within FLOAT32_GRAD_TOL of its
    scale."""
    seq_len, channels, chunk = 300, 24, kernels._FAST_CHUNK
    w, u, k, v = _inputs(seq_len, channels, batch=2, seed=seed, k_max=80.0)
    g = torch.Generator().manual_seed(seed + 1)
    share = torch.rand(channels, generator=g)  # split of the range between decay and bonus
    w = decay_sign * (1 - share) * kernels._FAST_RANGE32 * 0.999 / chunk
    u = torch.sign(torch.rand(channels, generator=g) - 0.5) * share * kernels._FAST_RANGE32 * 0.999
    k[:, 100:130] += 80.0
    k[:, 200:260] -= 80.0
    assert _uses_fast_path(w, u, torch.float32)
    grad_out = torch.randn(2, seq_len, channels, generator=g)
    ours = _grads(lambda *a: bi_wkv(*a, backend="numba"), (w, u, k, v), grad_out)
    ref, scales = _gradients_and_scales(w, u, k, v, grad_out)
    _assert_gradients_within(ours, ref, scales, FLOAT32_GRAD_TOL)


def test_fast_backward_agrees_with_running_maximum_backward(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Long sequence (many chunks, carried states): fast and running-maximum backward agree in float64."""
    args = tuple(x.double() for x in _inputs(5000, 48, batch=2, seed=seed))
    grad_out = torch.randn(2, 5000, 48, dtype=torch.float64)
    assert _uses_fast_path(args[0], args[1], torch.float64)
    fast = _grads(lambda *a: bi_wkv(*a, backend="numba"), args, grad_out)
    monkeypatch.setattr(kernels, "_FAST_CHUNK", 0)
    slow = _grads(lambda *a: bi_wkv(*a, backend="numba"), args, grad_out)
    for name, a, b in zip("wukv", fast, slow):
        assert _rel_err(a, b) <= 1e-11, name


def test_backward_mixed_fast_and_running_maximum_blocks(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """One call whose first channel block takes the fast backward and the second (decay far beyond the fast
    range) the running-maximum one; both exact."""
    seq_len, channels = 200, 48
    monkeypatch.setattr(kernels, "_fast_block_size", lambda batch, channels: 24)
    w, u, k, v = _inputs(seq_len, channels, batch=2, seed=seed, decay_max=2000.0)
    w[:24] = w[:24] / 1000
    u[:24] = u[:24] / 100
    assert _uses_fast_path(w[:24], u[:24], torch.float32) and not _uses_fast_path(w[24:], u[24:], torch.float64)
    grad_out = torch.randn(2, seq_len, channels)
    ours = _grads(lambda *a: bi_wkv(*a, backend="numba"), (w, u, k, v), grad_out)
    ref, scales = _gradients_and_scales(w, u, k, v, grad_out)
    _assert_gradients_within(ours, ref, scales, FLOAT32_GRAD_TOL)


# --- fast forward split over chunk ranges (fewer tasks than threads) ---------------------------------------------


@pytest.mark.parametrize("n_split", [2, 3, 7])
@pytest.mark.parametrize(("batch", "seq_len", "channels"), [(1, 2000, 16), (2, 1000, 5), (1, 64 * 9 + 1, 48)])
def test_split_forward_equals_task_forward(batch: int, seq_len: int, channels: int, n_split: int, seed: int) -> None:
    """Chunk ranges in parallel (uneven and empty ranges, partial last chunk, two channel blocks): the same
    arithmetic as one task per sequence, so bit-identical, and exact against the float64 definition."""
    w, u, k, v = _inputs(seq_len, channels, batch, seed=seed, decay_max=30.0)
    for dtype, fast_range in ((torch.float32, kernels._FAST_RANGE32), (torch.float64, kernels._FAST_RANGE)):
        assert _uses_fast_path(w, u, dtype)
        arrays = [w.double().numpy(), u.double().numpy(), k.to(dtype).numpy(), v.to(dtype).numpy()]
        block = 16 if channels > 16 else channels
        whole, split = np.empty_like(arrays[3]), np.empty_like(arrays[3])
        kernels._forward_kernel(*arrays, whole, block, kernels._CHUNK, kernels._FAST_CHUNK, fast_range)
        kernels._forward_kernel_split(*arrays, split, block, kernels._FAST_CHUNK, n_split)
        assert np.array_equal(whole, split)
    assert _rel_err(torch.from_numpy(split), bi_wkv_quadratic(w, u, k, v)) <= 1e-12


@pytest.mark.parametrize("n_split", [2, 3, 7])
@pytest.mark.parametrize(("batch", "seq_len", "channels"), [(1, 2000, 16), (2, 1000, 5), (1, 64 * 9 + 1, 48)])
def test_split_backward_equals_task_backward(batch: int, seq_len: int, channels: int, n_split: int, seed: int) -> None:
    """The backward over chunk ranges in parallel: grad_k and grad_v bit-identical to one task per sequence,
    grad_w and grad_u (summed per range, then added up) to float64 rounding; exact against the definition
    (where its explicit weights fit in memory)."""
    w, u, k, v = _inputs(seq_len, channels, batch, seed=seed, decay_max=30.0)
    grad_out = torch.randn(batch, seq_len, channels, generator=torch.Generator().manual_seed(seed))
    for dtype, fast_range in ((torch.float32, kernels._FAST_RANGE32), (torch.float64, kernels._FAST_RANGE)):
        assert _uses_fast_path(w, u, dtype)
        wu = [w.double().numpy(), u.double().numpy()]
        kv = [k.to(dtype).numpy(), v.to(dtype).numpy()]
        out = kernels.wkv_forward(*wu, *kv)
        g = grad_out.to(dtype).numpy()
        block = 16 if channels > 16 else channels
        grads = []
        for split in (False, True):
            gw, gu = np.zeros((batch, channels)), np.zeros((batch, channels))
            gk, gv = np.empty_like(kv[1]), np.empty_like(kv[1])
            if split:
                kernels._backward_kernel_split(*wu, *kv, out, g, gw, gu, gk, gv, block, kernels._FAST_CHUNK, n_split)
            else:
                chunks = (kernels._CHUNK, kernels._FAST_CHUNK)
                kernels._backward_kernel(*wu, *kv, out, g, gw, gu, gk, gv, block, *chunks, fast_range)
            grads.append((gw.sum(0), gu.sum(0), gk, gv))
        (gw, gu, gk, gv), (sw, su, sk, sv) = grads
        assert np.array_equal(gk, sk) and np.array_equal(gv, sv)
        np.testing.assert_allclose(sw, gw, rtol=1e-12, atol=1e-12 * np.abs(gw).max())
        np.testing.assert_allclose(su, gu, rtol=1e-12, atol=1e-12 * np.abs(gu).max())
    if batch * channels * seq_len**2 <= 2e7:  # the explicit float64 softmax weights are that large
        args = tuple(x.double() for x in (w, u, k, v))
        split_grads = tuple(torch.from_numpy(a) for a in (sw, su, sk, sv))
        _assert_gradients_within(split_grads, *_gradients_and_scales(*args, grad_out.double()), 1e-12)


def test_split_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split only with fewer tasks than threads, long enough sequences and every channel in the fast range."""
    monkeypatch.setattr(kernels.numba, "get_num_threads", lambda: 4)
    w, u = torch.full((16,), 0.01).double().numpy(), torch.zeros(16).double().numpy()
    assert kernels._split_count(w, u, (1, 1 << 16, 16), 16, kernels._FAST_RANGE32) == 4
    assert kernels._split_count(w, u, (2, 1 << 16, 16), 16, kernels._FAST_RANGE32) == 2
    assert kernels._split_count(w, u, (4, 1 << 16, 16), 16, kernels._FAST_RANGE32) == 1
    assert kernels._split_count(w, u, (1, 64 * 8 * 2, 16), 16, kernels._FAST_RANGE32) == 2  # 8 chunks per range
    w[3] = 1.0  # |w| * 64 beyond the range: running-maximum kernels, one task
    assert kernels._split_count(w, u, (1, 1 << 16, 16), 16, kernels._FAST_RANGE32) == 1


def test_block_size_whole_rows_when_every_channel_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole rows (one task per batch item) where every channel takes the fast path; blocks of up to 64 channels
    where some channel needs the running-maximum kernels, so that only its block takes them."""
    monkeypatch.setattr(kernels.numba, "get_num_threads", lambda: 2)
    w, u = np.full(384, 0.01), np.zeros(384)
    assert kernels._block_size(w, u, (1, 4096, 384), kernels._FAST_RANGE32) == 384
    w[100] = 1.0  # |w| * 64 beyond the range
    assert kernels._block_size(w, u, (1, 4096, 384), kernels._FAST_RANGE32) == 64
    assert kernels._block_size(w[90:114], u[:24], (1, 4096, 24), kernels._FAST_RANGE32) == 24  # too few for two


def test_torch_compile_keeps_the_numba_kernels(seed: int) -> None:
    """Under torch.compile the kernels stay one opaque custom op (not the pure PyTorch graph): same outputs and
    gradients as eager, with the op in the compiled graph."""
    args = _inputs(300, channels=16, batch=2, seed=seed, decay_max=20.0)

    def fn(w, u, k, v):
        return bi_wkv(w, u, torch.tanh(k), v) * 2

    assert_compiled_like_eager(fn, args, torch.randn(2, 300, 16), "bi_wkv_numba")


# --- ahead-of-time compilation (python -m monai_rwkv.ops.precompile) -------------------------------------------


def test_compile_kernel_compiles_the_signatures_the_public_calls_use(seed: int) -> None:
    """After compile_kernel, forward and backward calls in float32 and float64 (both launch layouts where
    numba has two threads) add no signature: what precompile writes to the cache is what users load."""
    for name in kernels.KERNELS:
        kernels.compile_kernel(name)
    before = {name: list(getattr(kernels, name).signatures) for name in kernels.KERNELS}
    assert all(len(signatures) >= 2 for signatures in before.values())
    threads = numba.get_num_threads()
    shapes = [(3, 200, 8)] + ([(1, 2 * 8 * kernels._FAST_CHUNK + 5, 8)] if numba.config.NUMBA_NUM_THREADS >= 2 else [])
    try:
        kernels.set_threads(2)
        for batch, seq_len, channels in shapes:
            w, u, k, v = _inputs(seq_len, channels, batch, seed=seed, decay_max=10.0)
            for dtype in (torch.float32, torch.float64):
                arrays = [w.double().numpy(), u.double().numpy(), k.to(dtype).numpy(), v.to(dtype).numpy()]
                out = kernels.wkv_forward(*arrays)
                kernels.wkv_backward(*arrays, out, np.ones_like(out))
    finally:
        kernels.set_threads(threads)
    assert {name: list(getattr(kernels, name).signatures) for name in kernels.KERNELS} == before


def test_compile_kernel_names_the_kernels_it_knows() -> None:
    assert sorted(name for group in kernels.KERNEL_GROUPS for name in group) == sorted(kernels.KERNELS)
    with pytest.raises(ValueError, match="unknown kernel '_nope': expected one of _backward_kernel"):
        kernels.compile_kernel("_nope")


def test_precompile_command_fills_the_cache_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    from monai_rwkv.ops import precompile

    assert precompile.main(["--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}: " in printed for name in kernels.KERNELS) and "kernels ready in" in printed
    with pytest.raises(SystemExit):
        precompile.main(["--jobs", "0"])


_THREADS_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from monai_rwkv.ops import bi_wkv, bi_wkv_quadratic
g = torch.Generator().manual_seed(int(sys.argv[1]))
w, u = (torch.rand(8, generator=g, dtype=torch.float64) - 0.5) / 4, torch.rand(8, generator=g, dtype=torch.float64)
k = torch.randn(2, 64, 8, generator=g, dtype=torch.float64).requires_grad_()
v = torch.randn(2, 64, 8, generator=g, dtype=torch.float64)
out = bi_wkv(w, u, k, v, backend="numba")
after_forward = torch.get_num_threads()
out.square().sum().backward()
error = (out - bi_wkv_quadratic(w, u, k, v)).abs().max().item()
print(after_forward, torch.get_num_threads(), error)
"""


def test_the_kernels_keep_the_callers_torch_thread_count(seed: int) -> None:
    """A fresh process that asked torch for one thread keeps one after the kernels' first calls (numba's OpenMP
    pool, here of two threads, set the process-wide count to its size), and the result is still exact."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_SCRIPT, str(seed)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    forward, backward, error = done.stdout.split()
    assert (forward, backward) == ("1", "1") and float(error) < 1e-9
