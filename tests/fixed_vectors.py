"""Test vectors for fixed-point components: the edge cases first, then seeded random values.

Shared by the Amaranth-simulator tests and the cocotb test modules (which regenerate them from a seed), with
the bit-exact check of the sigma-delta encoder.
"""

from __future__ import annotations

import numpy as np

from poise.golden.fixed import FixedFormat, sigma_delta_fixed


def edge_values(fmt: FixedFormat) -> np.ndarray:
    """Raw values where an encoder can go wrong: 0, ±1 LSB, around ½ and 1, and the format's limits."""
    half, one = fmt.one >> 1, fmt.one
    candidates = [
        0,
        1,
        -1,
        half - 1,
        half,
        half + 1,
        -half,
        one - 1,
        one,
        one + 1,
        -one,
        fmt.min_raw,
        fmt.min_raw + 1,
        fmt.max_raw - 1,
        fmt.max_raw,
    ]
    return np.unique(np.array([v for v in candidates if fmt.min_raw <= v <= fmt.max_raw], dtype=np.int64))


def sigma_delta_vectors(fmt: FixedFormat, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` raw ``(a, phi)`` pairs: every pair of edge values, pairs with ``a + phi`` at ½ and ½ ± 1 LSB,
    then random pairs, half over the whole format and half over the working range (a in [0, 1], φ in [-1, 1]).

    ``count`` must be at least the number of edge pairs plus 3 × 16 (raises ``ValueError`` otherwise).
    """

    def uniform(low: int, high: int, size: int) -> np.ndarray:
        return rng.integers(low, high, size=size, endpoint=True)

    edges = edge_values(fmt)
    edge_a, edge_phi = (grid.ravel() for grid in np.meshgrid(edges, edges))
    # a + phi exactly at the threshold ½ (q = 0) or one LSB either side of it, with both inside the format.
    half = fmt.one >> 1
    near_a = uniform(max(fmt.min_raw, half - fmt.max_raw + 1), min(fmt.max_raw, half - fmt.min_raw - 1), 48)
    near_phi = half - near_a + np.repeat([0, 1, -1], 16)
    n_random = count - edge_a.size - near_a.size
    if n_random < 0:
        raise ValueError(f"count must be at least {edge_a.size + near_a.size} for {fmt}")
    wide, narrow = n_random // 2, n_random - n_random // 2
    top = min(fmt.one, fmt.max_raw)
    rand_a = np.concatenate([uniform(fmt.min_raw, fmt.max_raw, wide), uniform(0, top, narrow)])
    rand_phi = np.concatenate(
        [uniform(fmt.min_raw, fmt.max_raw, wide), uniform(max(fmt.min_raw, -fmt.one), top, narrow)]
    )
    a = np.concatenate([edge_a, near_a, rand_a]).astype(np.int64)
    phi = np.concatenate([edge_phi, near_phi, rand_phi]).astype(np.int64)
    return a, phi


def assert_sigma_delta_exact(fmt: FixedFormat, a: np.ndarray, phi: np.ndarray, q: np.ndarray,
                             phi_new: np.ndarray) -> None:
    """Every result equals :func:`sigma_delta_fixed`; the message names the first mismatching vectors."""
    q_ref, phi_ref = sigma_delta_fixed(a, phi, fmt)
    bad = np.flatnonzero((q != q_ref) | (phi_new != phi_ref))
    assert bad.size == 0, f"{bad.size} of {len(a)} vectors differ; first ones:\n" + "\n".join(
        f"  vector {k}: a={a[k]} phi={phi[k]}: rtl q={q[k]} phi={phi_new[k]}, reference q={q_ref[k]} phi={phi_ref[k]}"
        for k in bad[:5]
    )
