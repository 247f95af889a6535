"""The native phase-1 kernel of Ada2MS's fused CPU step, against float64 references."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.optim import Ada2MS, _native

SEG = 16384  # the kernel's segment length (_square_sums.c): sizes around it cut segments oddly
SHAPES = [
    (0,),
    (1,),
    (31,),
    (32,),
    (33,),
    (1023,),
    (1025,),
    (SEG - 1,),
    (SEG,),
    (SEG + 1,),
    (4 * SEG + 5,),
    (64, 512),
    (7, 3, 5),
    (9 * SEG,),
]

needs_kernel = pytest.mark.skipif(_native.library() is None, reason="no C compiler with OpenMP")


def _reference(grads, sums, beta2):
    """torch.lerp(s, sum(g^2), 1 - beta2) with the sum of squares taken in float64."""
    return [
        torch.lerp(s, g.double().square().sum().reshape(1), 1 - beta2)
        for g, s in zip(grads, sums, strict=True)
    ]


def _grads(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # scales spread over many decades, as real gradients are
    return [
        torch.randn(s, generator=gen, dtype=dtype) * 10.0 ** (k % 7 - 4)
        for k, s in enumerate(SHAPES)
    ]


@needs_kernel
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("beta2", [0.999, 0.3, 0.0])
def test_sums_match_float64_reference(dtype, rtol, beta2):
    grads = _grads(dtype)
    sums = [torch.rand(1, dtype=torch.float64) for _ in grads]
    expected = _reference(grads, sums, beta2)
    assert _native.square_sums_ema_(grads, sums, beta2)
    for s, e in zip(sums, expected, strict=True):
        torch.testing.assert_close(s, e, rtol=rtol, atol=0)


@needs_kernel
def test_float32_accuracy_does_not_degrade_with_length():
    # one long constant tensor: a single float32 accumulator would be off by ~1e-3 here
    g = torch.full((1 << 24,), 0.1, dtype=torch.float32)
    s = torch.zeros(1, dtype=torch.float64)
    assert _native.square_sums_ema_([g], [s], 0.0)
    exact = g.double().square().sum()
    assert abs(s.item() - exact.item()) / exact.item() < 1e-7


@needs_kernel
def test_bit_reproducible_and_thread_count_only_reorders():
    grads = _grads(torch.float32, seed=1)
    runs = []
    for threads in (2, 2, 1):
        sums = [torch.zeros(1, dtype=torch.float64) for _ in grads]
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            assert _native.square_sums_ema_(grads, sums, 0.0)
        finally:
            torch.set_num_threads(before)
        runs.append(torch.cat(sums))
    assert torch.equal(runs[0], runs[1])  # same thread count: identical bits
    torch.testing.assert_close(runs[2], runs[0], rtol=1e-12, atol=0)


@needs_kernel
@pytest.mark.parametrize(
    "case", ["bfloat16", "non-contiguous", "mixed dtypes", "float32 sums", "empty list"]
)
def test_declines_what_it_does_not_handle(case):
    g = torch.randn(8, 8)
    grads = {
        "bfloat16": [g.bfloat16()],
        "non-contiguous": [g.t()],
        "mixed dtypes": [g, g.double()],
        "float32 sums": [g],
        "empty list": [],
    }[case]
    sums = [
        torch.ones(1, dtype=torch.float32 if case == "float32 sums" else torch.float64)
        for _ in grads
    ]
    before = [s.clone() for s in sums]
    assert not _native.square_sums_ema_(grads, sums, 0.9)
    assert all(torch.equal(a, b) for a, b in zip(sums, before, strict=True))


def test_missing_compiler_falls_back_to_the_compiled_reduction(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("ANALYSIS_LIB_NATIVE_CACHE", str(tmp_path / "cache"))
    assert _native.library() is None
    assert "no-such-cc" in _native.last_error
    g = torch.randn(100)
    s = torch.zeros(1, dtype=torch.float64)
    assert not _native.square_sums_ema_([g], [s], 0.9)
    assert s.item() == 0.0
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    # the optimizer still steps, through the compiled reduction, and agrees with its loop path
    _assert_fused_matches_loop(steps=3)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("ANALYSIS_LIB_NATIVE", "0")
    assert _native.library() is None


@needs_kernel
def test_build_writes_one_complete_library(monkeypatch, tmp_path):
    monkeypatch.setenv("ANALYSIS_LIB_NATIVE_CACHE", str(tmp_path))
    lib = _native.library()
    assert lib is not None
    files = sorted(p.name for p in tmp_path.iterdir())
    name = _native.library_path().name
    assert files == [name, f"{name}.sha256"]  # its recorded hash; no temporary file left behind
    assert _native.library() is lib  # built once, then reused


def test_failed_build_leaves_nothing_behind(monkeypatch, tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(_native, "SOURCE", broken)
    monkeypatch.setenv("ANALYSIS_LIB_NATIVE_CACHE", str(tmp_path / "cache"))
    assert _native.library() is None
    assert "broken.c" in _native.last_error  # the compiler's message is kept
    assert not any((tmp_path / "cache").iterdir())


def _assert_fused_matches_loop(
    steps: int, native: bool = True, dtype: torch.dtype = torch.float64
) -> None:
    """Ada2MS's fused path against its for-loop reference (float64: 1e-12; float32: 1e-6, the
    tolerance of tests/optim/test_optim.py's path agreement)."""
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    gen = torch.Generator().manual_seed(0)
    shapes = [(300, 200), (200,), (5 * SEG + 3,), (1,)]
    start = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    grads = [
        [torch.randn(s, generator=gen, dtype=dtype) * 10.0**-k for k, s in enumerate(shapes)]
        for _ in range(steps)
    ]
    results = []
    for fused in (False, True):
        params = [p.clone().requires_grad_() for p in start]
        opt = Ada2MS(params, lr=1e-2, alpha=0.3, fused=fused)
        opt._native_reduction = native
        for gs in grads:
            for p, g in zip(params, gs, strict=True):
                p.grad = g.clone()
            opt.step()
        results.append(params)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@needs_kernel
def test_fused_step_uses_the_kernel_and_matches_the_loop(native_kernel_calls):
    calls = native_kernel_calls
    _assert_fused_matches_loop(steps=20)
    _assert_fused_matches_loop(steps=5, dtype=torch.float32)
    assert len(calls) == 25 and all(calls)  # every fused step went through the kernel
    calls.clear()
    _assert_fused_matches_loop(steps=3, native=False)
    assert not calls
