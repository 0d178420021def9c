"""numba's fused counting loops against the torch passes they replace, bit for bit.

``geometry/kernels.py`` claims the same IEEE operations in the same order as
``fused.key_passes`` and ``top_n.separate``: every count, threshold, attaining key and
flag must be equal, on exact ties, near-ties, keys of very different norms, absent
keys and empty rests, in float64 and float32; and the metrics built on them must not
change when the loops are switched off.
"""

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_geom.geometry import kernels
from tl_geom.geometry.all_queries import separability_all_queries
from tl_geom.geometry.baseline import random_ranks, random_separability
from tl_geom.geometry.fused import baseline_passes, key_passes
from tl_geom.geometry.top_n import separability, separate, sorted_rank

pytest.importorskip("numba")

DTYPES = [torch.float64, torch.float32]


def same(got: Any, want: Any) -> bool:
    return all(torch.equal(x, y) for x, y in zip(got, want, strict=True))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.0, 1e-12, 1e-3, 0.4]),
    st.sampled_from(DTYPES),
    st.booleans(),
)
def test_selection_loop_equals_the_torch_passes(seed: int, bound: float, dtype, masked) -> None:
    """``kernels.selection_counts`` is ``top_n.separate`` with a bound: counts,
    thresholds, the first keys attaining them, flags; with tied weights (so tied ranks
    broken by position), tied and near-tied scores, absent keys, an empty rest and
    an N that takes every key."""
    gen = torch.Generator().manual_seed(seed)
    b, c, length = 2, 3, 29
    g = torch.randint(-4, 5, (b, c, 5, length), generator=gen).to(dtype) / 2  # exact ties
    g[..., 3] = g[..., 4] + 1e-7  # near-ties
    a = torch.randint(0, 3, (b, c, length), generator=gen).double()
    _, rank = sorted_rank(a)
    n = torch.tensor([1, 2, 7, 20, length])  # N = L: the rest is empty
    rank_f = rank.double()
    key_mask = None
    if masked:
        key_mask = torch.rand(b, c, length, generator=gen) < 0.7
        key_mask[..., :3] = True
    e = torch.rand(b, c, 1, generator=gen, dtype=torch.float64) * bound
    sel = (rank_f.unsqueeze(-2) < n.double().view(-1, 1)).to(dtype)
    present = key_mask.unsqueeze(-2) if key_mask is not None else None
    want = separate(g, sel, present, e)
    got = kernels.selection_counts(g, rank_f, n, key_mask, e)
    assert got is not None and same(got, want)
    assert bool(want[-1].any()) or bound == 0.0  # the flags are exercised


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1), st.sampled_from([1e-14, 1e-6, 1e-3, 1e-1]), st.sampled_from(DTYPES)
)
def test_key_loop_equals_key_passes(seed: int, scale: float, dtype) -> None:
    """``kernels.baseline_counts`` is ``fused.key_passes``: counts and flags, with exact
    ties, near-ties and a sink's long value, float64 and float32 scores."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(2, 3, 4, 32, generator=gen, dtype=torch.float64)
    g[..., 5] = g[..., 6]
    g[..., 7] = g[..., 8] + 1e-9
    g = g.to(dtype)
    rank = torch.stack([torch.randperm(32, generator=gen) for _ in range(6)]).view(2, 3, 32)
    rank = rank.double()
    n = torch.tensor([1, 3, 16, 31])
    w = torch.rand(2, 1, 1, 32, generator=gen, dtype=torch.float64) * 1e-2
    w[..., 0] = 10.0
    a_sel = torch.rand(2, 3, 4, 1, generator=gen, dtype=torch.float64) * 20
    tiny = 1e-300 if dtype == torch.float64 else 1e-36
    want = key_passes(g, rank, n, w, a_sel, scale, tiny)
    got = kernels.baseline_counts(g, rank, n, w, a_sel, scale, tiny)
    assert got is not None and same(got, want)
    with kernels.use_numba(True):
        assert same(baseline_passes(g, rank, n, w, a_sel, scale, tiny), want)


def tied_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal pattern with tied weights and coincident value rows (flags and rechecks)."""
    gen = torch.Generator().manual_seed(seed)
    length = 24
    scores = torch.randint(0, 3, (3, length, length), generator=gen).double()
    pattern = scores.masked_fill(torch.ones(length, length).triu(1).bool(), -torch.inf)
    pattern = pattern.softmax(-1)
    values = torch.randn(3, length, 8, generator=gen, dtype=torch.float64)
    values[:, 5] = values[:, 2]
    return pattern, values


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_with_and_without_the_loops(seed: int) -> None:
    """Top-N (final query), every query, and the baseline in both score dtypes: the
    same tensors with numba's loops as with the torch passes (every query's radii
    within rounding: its s is summed in another order)."""
    pattern, values = tied_inputs(seed)
    n = [1, 2, 4, 8]

    def run() -> list[torch.Tensor]:
        top = separability(pattern[:, -1], values, n)
        every = separability_all_queries(pattern, values, n)
        base = [random_separability(pattern[:, -1], values, n, score_dtype=dt) for dt in DTYPES]
        out = [top.precision, top.recall, top.r_max, top.r_min]
        out += [every.precision, every.recall, every.r_max, every.r_min]
        for r in base:
            out += [r.precision, r.recall, r.f1_std]
        return out

    with kernels.use_numba(True):
        got = run()
    with kernels.use_numba(False):
        want = run()
    for i, (x, y) in enumerate(zip(got, want, strict=True)):
        # every query's s comes as running sums (prefix_sums), rounded in another order
        # than the masked matmul: the same counts, the radii within rounding
        rtol = 1e-12 if i in (6, 7) else 0
        torch.testing.assert_close(x, y, rtol=rtol, atol=0, equal_nan=True)


def test_a_failed_compile_warns_and_falls_back(monkeypatch: Any) -> None:
    """A loop that cannot compile warns once, switches the loops off, and the torch
    passes give the counts; ``use_numba`` restores the previous choice after its block."""
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(2, 3, 2, 16, generator=gen, dtype=torch.float64)
    rank = torch.stack([torch.randperm(16, generator=gen) for _ in range(6)]).view(2, 3, 16)
    n = torch.tensor([1, 4])
    args = (torch.ones(2, 1, 1, 16, dtype=torch.float64), torch.ones(2, 3, 2, 1), 1e-13, 0.0)
    want = key_passes(g, rank.double(), n, *args)

    def broken(_name: str) -> Any:
        def fail(*_a: Any) -> None:
            raise RuntimeError("no LLVM here")

        return fail

    monkeypatch.setattr(kernels, "_jit", broken)
    with kernels.use_numba(True):
        assert kernels.enabled(g)
        with pytest.warns(UserWarning, match="no LLVM here"):
            got = baseline_passes(g, rank.double(), n, *args)
        assert not kernels.enabled(g)
    assert same(got, want)


def test_the_loops_compile_under_the_test_import_hook() -> None:
    """The type-checking import hook of the tests wraps every function; the loops are
    compiled from the unwrapped ones (else every test above would test the fallback)."""
    g = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    with kernels.use_numba(True):
        got = kernels.baseline_counts(
            g,
            torch.arange(4.0).view(1, 1, 4),
            torch.tensor([1]),
            torch.ones(1, 1, 1, 4, dtype=torch.float64),
            torch.ones(1, 1, 1, 1, dtype=torch.float64),
            1e-16,
            0.0,
        )
        assert got is not None and kernels.enabled(g)
    assert kernels._compiled["key"].signatures  # compiled, not interpreted
    assert not kernels.enabled(torch.zeros(1, device="meta"))  # CPU only
    assert not kernels.enabled(torch.zeros(1, dtype=torch.bfloat16))  # no NumPy form


def torch_ranks(u: torch.Tensor) -> torch.Tensor:
    """The inverse of a stable argsort, literally."""
    order = torch.argsort(u, dim=-1, stable=True)
    return torch.argsort(order, dim=-1, stable=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 300), st.integers(1, 4))
def test_bucket_ranks_equal_a_stable_sort(seed: int, length: int, draws: int) -> None:
    """``random_ranks`` by numba's bucket sort gives the torch path's ranks bit for bit."""
    with kernels.use_numba(True):
        got = random_ranks((2, 3), length, draws=draws, seed=seed)
    with kernels.use_numba(False):
        want = random_ranks((2, 3), length, draws=draws, seed=seed)
    assert torch.equal(got, want)


def test_bucket_ranks_on_ties_zeros_and_crowded_buckets() -> None:
    """Tied ``u`` rank by position; 0, values next to 1 and every value in one bucket
    (the slow case of the bucket sort) still give the stable sort's ranks."""
    gen = torch.Generator().manual_seed(5)
    u = torch.rand(4, 64, generator=gen, dtype=torch.float64)
    u[0, 10] = u[0, 20] = u[0, 30]  # ties
    u[1, :8] = 0.0
    u[1, 8:12] = 1.0 - 2.0**-53  # the largest float64 below 1
    u[2] = u[2] * 1e-6  # all in the first bucket
    u[3] = torch.tensor(0.5, dtype=torch.float64)  # all equal
    got = kernels.ranks_of_uniforms(u)
    assert got is not None and torch.equal(got, torch_ranks(u))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([[1, 2, 4, 8], [5, 1, 5, 30], [31]]))
def test_subset_sums_are_the_masked_sums(seed: int, ns: list[int]) -> None:
    """Running sums in rank order are the masked sums ``sel @ y`` within the bound of a
    float64 sum of N terms (unsorted and repeated N too), and exact on integers."""
    gen = torch.Generator().manual_seed(seed)
    length = 32
    y = torch.randn(2, length, 5, generator=gen, dtype=torch.float64)
    rank = random_ranks((2,), length, draws=3, seed=seed).double()
    n = torch.tensor(ns)
    sel = (rank.unsqueeze(-2) < n.double().view(-1, 1)).double()
    want = torch.einsum("btjk,bke->btje", sel, y)
    got = kernels.subset_sums(y, rank, n)
    assert got is not None
    bound = 40 * 2.0**-53 * torch.einsum("btjk,bke->btje", sel, y.abs())
    assert bool(((got - want).abs() <= bound).all())
    y_int = y.round()  # integers: every order sums exactly
    got_int = kernels.subset_sums(y_int, rank, n)
    assert got_int is not None
    assert torch.equal(got_int, torch.einsum("btjk,bke->btje", sel, y_int))


def test_masked_weights_are_the_selection_times_the_weights() -> None:
    """``masked_weights`` is ``(rank < N) * a`` bit for bit, signed zeros included."""
    gen = torch.Generator().manual_seed(7)
    a = torch.rand(2, 3, 17, generator=gen, dtype=torch.float64)
    a[0, 0, :4] = -0.0
    a[1, 2, 5:9] = 0.0
    _, rank = sorted_rank(a)
    rank_f = rank.double()
    n = torch.tensor([1, 4, 16])
    out = torch.empty(2, 3, 3, 17, dtype=torch.float64)
    assert kernels.masked_weights(a, rank_f, n, out)
    want = (rank_f.unsqueeze(-2) < n.double().view(-1, 1)).double() * a.unsqueeze(-2)
    assert torch.equal(out, want)
    assert torch.equal(torch.signbit(out), torch.signbit(want))


@pytest.mark.parametrize("queries", ["last", "all"])
def test_counts_fall_back_after_the_sums_loop(queries: str, monkeypatch: Any) -> None:
    """Where s came from a loop (the weights loop for the final query, prefix sums for
    every query) but the counting loop is unavailable, the torch passes finish the
    scores and count them: the same metrics (every query's radii within rounding)."""
    pattern, values = tied_inputs(2)

    def run() -> Any:
        if queries == "last":
            return separability(pattern[:, -1], values, [1, 2, 4])
        return separability_all_queries(pattern, values, [1, 2, 4])

    with kernels.use_numba(False):
        want = run()
    monkeypatch.setattr(kernels, "selection_counts", lambda *_a, **_k: None)
    with kernels.use_numba(True):
        got = run()
    for key in ("precision", "recall", "r_max", "r_min"):
        rtol = 1e-12 if queries == "all" and key.startswith("r_") else 0
        torch.testing.assert_close(
            getattr(got, key), getattr(want, key), rtol=rtol, atol=0, equal_nan=True
        )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.lists(st.integers(1, 23), min_size=1, max_size=5),
    st.sampled_from(DTYPES),
)
def test_prefix_sums_are_the_masked_sums(seed: int, ns: list[int], dtype: torch.dtype) -> None:
    """Running sums in rank order = ``((rank < N) a) @ V`` within the certified bound of
    a sum of N terms, for N in any order (repeats too), tied and zero weights."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, 24, generator=gen, dtype=torch.float64)
    a[0, 1, ::3] = a[0, 1, 0]  # ties: ranked by position
    a[1, 2, 10:] = 0.0
    a = a.to(dtype)
    v = torch.randn(2, 24, 5, generator=gen, dtype=dtype)
    _, rank = sorted_rank(a)
    n = torch.tensor(ns)
    with kernels.use_numba(True):
        got = kernels.prefix_sums(a, rank.double(), n, v)
    assert got is not None and got.dtype == dtype
    sel = (rank.unsqueeze(-2) < n.view(-1, 1)).double()  # [b, c, nn, L]
    exact = torch.einsum("bcmk,bkd->bcmd", sel * a.double().unsqueeze(-2), v.double())
    terms = torch.einsum("bcmk,bkd->bcmd", sel * a.double().abs().unsqueeze(-2), v.double().abs())
    u = torch.finfo(dtype).eps / 2
    gamma = (max(ns) + 1) * u / (1 - (max(ns) + 1) * u)
    assert bool(((got.double() - exact).abs() <= gamma * terms).all())
    # the nested sets, literally: s of the top-1 key is its own a_k v_k, rounded once
    if 1 in ns:
        top = rank.argmin(-1)  # the key of rank 0
        y = a.gather(-1, top.unsqueeze(-1)) * v[torch.arange(2).view(-1, 1), top]
        assert torch.equal(got[:, :, ns.index(1)], y)


def test_float32_thresholds_round_as_torch_rounds_them() -> None:
    """``t_min - 2E`` is formed in float32, as torch forms it: a rest key between the
    float32 and the exact threshold counts as torch counts it (not by float64 math)."""
    one = torch.tensor(1.0, dtype=torch.float32)
    below = torch.nextafter(one, torch.tensor(0.0))  # 1 - 2**-24
    g = torch.stack([one, below, torch.tensor(-5.0)]).view(1, 1, 1, 3)
    rank = torch.tensor([[[0.0, 1.0, 2.0]]], dtype=torch.float64)
    n = torch.tensor([1])
    bound = torch.full((1, 1, 1), (2.0**-25 + 2.0**-30) / 2, dtype=torch.float64)
    sel = (rank.unsqueeze(-2) < 1).float()
    want = separate(g, sel, None, bound)
    got = kernels.selection_counts(g, rank, n, None, bound)
    assert got is not None and same(got, want)
    assert int(want[0]) == 1  # the rest key counts: float32's threshold is 1 - 2**-24


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.lists(st.sampled_from([0.0, 1e-3, 0.5, 0.9, 1 - 1e-9, 1.0]), min_size=1, max_size=3),
    st.integers(2, 40),
    st.sampled_from(DTYPES),
)
def test_ar1_chains_equal_the_loop_over_positions(
    seed: int, rhos: list[float], length: int, dtype: torch.dtype
) -> None:
    """The envelope's AR(1) chains: one chain per thread gives the torch loop's bits."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(rhos), 3, length, 5, generator=gen, dtype=dtype)
    rho = torch.tensor(rhos, dtype=dtype).view(-1, 1, 1)
    scale = (1 - rho * rho).clamp_min(0).sqrt()
    want = z.clone()
    for t in range(1, length):  # simulation._sample_rows' own loop, literally
        want[:, :, t].mul_(scale).add_(rho * want[:, :, t - 1])
    with kernels.use_numba(True):
        assert kernels.ar1_chain(z, scale, rho)
    assert torch.equal(z, want)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.ar1_chain(z.transpose(2, 3), scale, rho)


def test_envelope_samples_equal_with_and_without_the_loops() -> None:
    """simulate_heads (whose values come from the AR(1) chains): the same tensors."""
    from tl_geom.geometry.simulation import simulate_heads

    gen = torch.Generator().manual_seed(5)
    alpha = torch.softmax(torch.randn(3, 64, generator=gen, dtype=torch.float64), -1)
    params = torch.tensor(
        [[0.3, 0.5, 0.1, 0.2], [0.0, 1.0, float("inf"), 0.0], [1.2, 2.0, 1e-4, 0.9]],
        dtype=torch.float64,
    )

    def run() -> list[torch.Tensor]:
        sim = simulate_heads(alpha, [1, 4, 16], d=8, params=params, samples=4, chunk=2)
        return [sim.precision, sim.recall, sim.f1_std, sim.perfect]

    with kernels.use_numba(True):
        got = run()
    with kernels.use_numba(False):
        want = run()
    assert same(got, want)


def torch_sorted_rank(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """top_n.sorted_rank's torch form, literally."""
    a_sorted, order = torch.sort(a, dim=-1, descending=True, stable=True)
    ranks = torch.arange(a.shape[-1]).expand_as(order)
    return a_sorted, torch.empty_like(order).scatter_(-1, order, ranks)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 300),
    st.lists(
        st.sampled_from(
            [0.0, -0.0, 1.0, -1.0, 5e-324, 0.5, float("inf"), float("nan"), -float("nan")]
        ),
        max_size=6,
    ),
)
def test_radix_sort_equals_torchs_stable_sort(
    seed: int, length: int, specials: list[float]
) -> None:
    """sorted_rank by the radix loop: torch's stable descending sort bit for bit, on
    ties, signed zeros, subnormals, the all-query maps' -1, infinities and NaN."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, length, generator=gen, dtype=torch.float64) ** 8  # crowded near 0
    a[0, 1] = a[0, 1, 0]  # one row all tied
    a[1, 0, length // 2 :] = -1.0  # a causal chunk's future keys
    for i, x in enumerate(specials):
        a[1, 2, (7 * i) % length] = x
    with kernels.use_numba(True):
        got = kernels.sorted_rank(a)
        assert got is not None
        entry = sorted_rank(a)  # top_n's own entry takes the loop
    want = torch_sorted_rank(a)
    for pair in (got, entry):
        assert torch.equal(pair[1], want[1])
        assert torch.equal(pair[0].nan_to_num(7.0), want[0].nan_to_num(7.0))
        assert torch.equal(torch.signbit(pair[0]), torch.signbit(want[0]))
    assert kernels.sorted_rank(a.float()) is None  # float32: torch's sort
