"""Head taxonomy: curves against a literal reference, rules; k-means and agreement scores."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from tests._type_heads import synthetic_batch
from tl_geom import TlGeomError
from tl_geom.geometry.clustering import (
    adjusted_rand,
    best_permutation_accuracy,
    cluster_agreement,
    kmeans,
)
from tl_geom.geometry.taxonomy import classify_heads, head_curves
from tl_geom.geometry.top_n import separability

# ---------------------------------------------------------------- literal references


def ref_curves(alpha: list[float], values: list[list[float]], ns: list[int], q: int) -> dict:
    """One head, loops in float64: top-N by weight (ties to the earlier key), cosines, masses."""
    length, d = len(alpha), len(values[0])
    order = sorted(range(length), key=lambda i: (-alpha[i], i))

    tiny = 1e-12 * max(math.sqrt(sum(x * x for x in v)) for v in values)

    def cos(a: list[float], b: list[float]) -> float:
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(x * x for x in b))
        if na <= tiny or nb <= tiny:
            return 0.0
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)

    c_last, c_sink = [], []
    for n in ns:
        s = [sum(alpha[i] * values[i][j] for i in order[:n]) for j in range(d)]
        c_last.append(cos(s, values[q]))
        c_sink.append(cos(s, values[0]))

    def norm(v: list[float]) -> float:
        return math.sqrt(sum(x * x for x in v))

    rest = [
        sum(alpha[i] * values[i][j] for i in range(length) if i not in (0, q)) for j in range(d)
    ]
    return {
        "c_last": c_last,
        "c_sink": c_sink,
        "mass": [
            norm([alpha[0] * x for x in values[0]]),
            norm([alpha[q] * x for x in values[q]]),
            norm(rest),
        ],
    }


def ref_ari(a: list[int], b: list[int]) -> float:
    """Adjusted Rand from pair counts, literally."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    both = sum(a[i] == a[j] and b[i] == b[j] for i, j in pairs)
    same_a = sum(a[i] == a[j] for i, j in pairs)
    same_b = sum(b[i] == b[j] for i, j in pairs)
    expected = same_a * same_b / len(pairs)
    top = (same_a + same_b) / 2 - expected
    return 1.0 if top == 0 else (both - expected) / top


def ref_accuracy(truth: list[int], clusters: list[int]) -> float:
    """Best one-to-one cluster->label map, by trying every injective map."""
    labs, cls = sorted(set(truth)), sorted(set(clusters))
    best = 0
    targets = labs + [None] * len(cls)
    for perm in itertools.permutations(targets, len(cls)):
        m = dict(zip(cls, perm, strict=True))
        best = max(best, sum(m[c] == t for c, t in zip(clusters, truth, strict=True)))
    return best / len(truth)


NS = [1, 2, 4, 8, 16, 32]

# ---------------------------------------------------------------- curves


def test_curves_match_reference_on_synthetic_heads() -> None:
    _, alpha, values = synthetic_batch(2)
    got = head_curves(alpha, values, NS)
    for h in range(alpha.shape[0]):
        ref = ref_curves(alpha[h].tolist(), values[h].tolist(), NS, alpha.shape[1] - 1)
        np.testing.assert_allclose(got.c_last[h], ref["c_last"], atol=1e-12)
        np.testing.assert_allclose(got.c_sink[h], ref["c_sink"], atol=1e-12)
        mass = [got.mass_sink[h], got.mass_last[h], got.mass_rest[h]]
        np.testing.assert_allclose(torch.stack(mass), ref["mass"], atol=1e-12)


@st.composite
def rows(draw: st.DrawFn):
    """Integer-valued weights (ties, zeros) and values, batched as [b, h, L] / [b, h, L, d]."""
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    length, d = draw(st.integers(2, 7)), draw(st.integers(1, 3))
    ints = st.integers(0, 3)
    w = torch.tensor(draw(st.lists(ints, min_size=b * h * length, max_size=b * h * length)))
    w = w.view(b, h, length).double()
    w[..., 0] += (w.sum(-1) == 0).double()  # no all-zero row
    alpha = w / w.sum(-1, keepdim=True)
    vals = st.integers(-2, 2)
    size = b * h * length * d
    values = torch.tensor(draw(st.lists(vals, min_size=size, max_size=size))).double()
    ns = sorted(set(draw(st.lists(st.integers(1, length - 1), min_size=1, max_size=3))))
    q = draw(st.integers(1, length - 1))
    return alpha, values.view(b, h, length, d), ns, q


@given(rows())
def test_curves_property_against_reference(case) -> None:
    alpha, values, ns, q = case
    got = head_curves(alpha, values, ns, query=q)
    given_s = head_curves(alpha, values, ns, query=q, s=separability(alpha, values, ns).s)
    for idx in itertools.product(*[range(s) for s in alpha.shape[:-1]]):
        ref = ref_curves(alpha[idx].tolist(), values[idx].tolist(), ns, q)
        for res in (got, given_s):
            np.testing.assert_allclose(res.c_last[idx], ref["c_last"], atol=1e-12)
            np.testing.assert_allclose(res.c_sink[idx], ref["c_sink"], atol=1e-12)
            m = torch.stack([res.mass_sink[idx], res.mass_last[idx], res.mass_rest[idx]])
            np.testing.assert_allclose(m, ref["mass"], atol=1e-12)


def test_curves_bad_input() -> None:
    alpha = torch.full((4,), 0.25)
    values = torch.ones(4, 2)
    with pytest.raises(TlGeomError, match="query=0 is the sink"):
        head_curves(alpha, values, [1], query=0)
    with pytest.raises(TlGeomError, match="out of range"):
        head_curves(alpha, values, [1], query=9)
    with pytest.raises(TlGeomError, match="n=4 out of range"):
        head_curves(alpha, values, [4])
    with pytest.raises((TlGeomError, TypeCheckError)):
        head_curves(alpha, values, [1, 2], s=torch.zeros(3, 2))


def test_curves_to_frame() -> None:
    _, alpha, values = synthetic_batch(1)
    df = head_curves(alpha, values, NS).to_frame()
    assert len(df) == 3 * len(NS)
    assert list(df.columns) == [
        "dim0",
        "n",
        "c_last",
        "c_sink",
        "mass_sink",
        "mass_last",
        "mass_rest",
    ]


# ---------------------------------------------------------------- k-means and agreement


def test_kmeans_recovers_the_synthetic_types() -> None:
    kinds, alpha, values = synthetic_batch(6, seed=3)
    c = head_curves(alpha, values, NS)
    mass = torch.stack([c.mass_sink, c.mass_last, c.mass_rest], -1)
    types = classify_heads(c.c_last, c.c_sink, mass, n=NS, length=alpha.shape[-1])
    agree = cluster_agreement(c.c_last, c.c_sink, mass, types.code)
    assert agree.labelled == len(kinds)
    assert agree.accuracy == 1.0 and agree.ari == pytest.approx(1.0)
    again = cluster_agreement(c.c_last, c.c_sink, mass, types.code)
    assert np.array_equal(again.clusters, agree.clusters)  # fixed seed


@given(st.integers(0, 10_000), st.lists(st.integers(1, 4), min_size=3, max_size=3))
def test_kmeans_on_separated_blobs(seed: int, sizes: list[int]) -> None:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    truth = np.repeat(np.arange(3), sizes)
    x = centres[truth] + rng.uniform(-1, 1, size=(len(truth), 2))
    labels, _, inertia = kmeans(x, 3, seed=seed)
    assert adjusted_rand(truth, labels) == pytest.approx(1.0)
    literal = sum(float(((x[truth == c] - x[truth == c].mean(0)) ** 2).sum()) for c in range(3))
    assert inertia == pytest.approx(literal, rel=1e-12, abs=1e-12)


@given(
    st.integers(2, 9).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 2), min_size=n, max_size=n),
            st.lists(st.integers(0, 3), min_size=n, max_size=n),
        )
    )
)
def test_agreement_scores_against_reference(case) -> None:
    a, b = case
    assert adjusted_rand(np.array(a), np.array(b)) == pytest.approx(ref_ari(a, b), abs=1e-12)
    assert best_permutation_accuracy(np.array(a), np.array(b)) == pytest.approx(ref_accuracy(a, b))


def test_kmeans_bad_input() -> None:
    with pytest.raises(TlGeomError, match="k <= points"):
        kmeans(np.zeros((2, 3)), 3)
    with pytest.raises(TlGeomError, match="NaN"):
        kmeans(np.full((4, 1), np.nan), 2)
