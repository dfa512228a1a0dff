"""The integer sigma-delta reference against the float Eq. 11, exact rationals and hand-worked cases."""

from fractions import Fraction

import numpy as np
import pytest
from fixed_vectors import sigma_delta_vectors

from poise.golden.equations import sigma_delta
from poise.golden.fixed import FixedFormat, sigma_delta_fixed

FORMATS = [FixedFormat(8, 4), FixedFormat(16, 12), FixedFormat(6, 5), FixedFormat(24, 8), FixedFormat(32, 30)]


# float32 (the golden models' dtype) holds every intermediate exactly up to 22-bit formats.
FLOAT_CASES = [(fmt, np.float64) for fmt in FORMATS] + [(fmt, np.float32) for fmt in FORMATS if fmt.width <= 22]


@pytest.mark.parametrize(("fmt", "dtype"), FLOAT_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_matches_float_equation_when_not_saturated(fmt, dtype):
    rng = np.random.default_rng(11)
    a, phi = sigma_delta_vectors(fmt, 20_000, rng)
    q, phi_new = sigma_delta_fixed(a, phi, fmt)
    q_float, phi_float = sigma_delta(fmt.to_float(a).astype(dtype), fmt.to_float(phi).astype(dtype))
    assert q_float.dtype == dtype
    np.testing.assert_array_equal(q, q_float)  # the spike never depends on saturation
    exact = phi_float.astype(np.float64) * fmt.one
    unsaturated = (exact >= fmt.min_raw) & (exact <= fmt.max_raw)
    assert unsaturated.mean() > 0.5, "too few unsaturated cases to compare"
    np.testing.assert_array_equal(phi_new[unsaturated], exact[unsaturated])
    # Where the float result leaves the format, the integer one sits on the nearer limit.
    np.testing.assert_array_equal(phi_new[exact > fmt.max_raw], fmt.max_raw)
    np.testing.assert_array_equal(phi_new[exact < fmt.min_raw], fmt.min_raw)


def _exact(a: int, phi: int, fmt: FixedFormat) -> tuple[int, int]:
    """Eq. 11 in rationals, then clamped to the format: the definition the integer code must meet."""
    total = Fraction(a + phi, 2**fmt.frac)
    q = int(total > Fraction(1, 2))
    raw = (total - q) * 2**fmt.frac
    assert raw.denominator == 1
    return q, min(max(int(raw), -(2 ** (fmt.width - 1))), 2 ** (fmt.width - 1) - 1)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_matches_rational_definition_everywhere(fmt):
    a, phi = sigma_delta_vectors(fmt, 1_500, np.random.default_rng(5))
    q, phi_new = sigma_delta_fixed(a, phi, fmt)
    expected = [_exact(int(x), int(y), fmt) for x, y in zip(a, phi, strict=True)]
    assert list(zip(q.tolist(), phi_new.tolist(), strict=True)) == expected


# Q3.4 (width 8, frac 4): 1.0 = 16, ½ = 8, limits -128 and 127. Worked by hand.
@pytest.mark.parametrize(
    ("a", "phi", "q", "phi_new"),
    [
        (0, 0, 0, 0),
        (8, 0, 0, 8),  # φ + a = ½ exactly: no spike (strict comparison)
        (9, 0, 1, -7),  # ½ + 1 LSB: spike, φ = 9/16 - 1
        (4, 4, 0, 8),
        (-8, 16, 0, 8),
        (16, 0, 1, 0),
        (127, 16, 1, 127),  # 143 - 16 = 127: exactly the upper limit, not saturated
        (127, 17, 1, 127),  # 144 - 16 = 128: saturates to 127
        (127, 127, 1, 127),  # 254 - 16 = 238: saturates to 127
        (-64, -64, 0, -128),  # exactly the lower limit
        (-64, -65, 0, -128),  # -129 saturates to -128
        (-128, -128, 0, -128),
        (-128, 127, 0, -1),
        (127, -110, 1, 1),
    ],
)
def test_hand_worked_cases(a, phi, q, phi_new):
    got_q, got_phi = sigma_delta_fixed(np.array([a]), np.array([phi]), FixedFormat(8, 4))
    assert (int(got_q[0]), int(got_phi[0])) == (q, phi_new)


def test_spike_count_tracks_input_sum():
    """Over time, Σq tracks Σa: with φ₀ = 0 and a in [0, 1], Σa − Σq = φ stays in (−½, ½] (no saturation)."""
    fmt = FixedFormat(12, 8)
    rng = np.random.default_rng(3)
    a = rng.integers(0, fmt.one, size=(500, 64), endpoint=True)
    phi = np.zeros(64, dtype=np.int64)
    spikes = np.zeros(64, dtype=np.int64)
    for a_t in a:
        q, phi = sigma_delta_fixed(a_t, phi, fmt)
        spikes += q
    np.testing.assert_array_equal(a.sum(axis=0) - spikes * fmt.one, phi)
    assert phi.min() > -(fmt.one >> 1)
    assert phi.max() <= fmt.one >> 1
    assert spikes.min() > 0


def test_broadcasts_and_returns_int64():
    fmt = FixedFormat(8, 4)
    q, phi = sigma_delta_fixed(np.array([[0], [9]]), np.array([0, 8, -8]), fmt)
    assert q.shape == phi.shape == (2, 3)
    assert q.dtype == phi.dtype == np.int64
    assert q.tolist() == [[0, 0, 0], [1, 1, 0]]
    assert phi.tolist() == [[0, 8, -8], [-7, 1, 1]]


def test_rejects_inputs_outside_the_format():
    fmt = FixedFormat(8, 4)
    with pytest.raises(ValueError, match="a has raw values outside"):
        sigma_delta_fixed(np.array([128]), np.array([0]), fmt)
    with pytest.raises(ValueError, match="phi has raw values outside"):
        sigma_delta_fixed(np.array([0]), np.array([-129]), fmt)
    with pytest.raises(ValueError, match="fraction bit"):
        sigma_delta_fixed(np.array([0]), np.array([0]), FixedFormat(8, 0))


@pytest.mark.parametrize(("width", "frac"), [(0, 0), (8, 8), (8, -1), (63, 4), (8.0, 4)])
def test_format_validation(width, frac):
    with pytest.raises(ValueError):
        FixedFormat(width, frac)


def test_format_limits():
    fmt = FixedFormat(8, 4)
    assert (fmt.min_raw, fmt.max_raw, fmt.one) == (-128, 127, 16)
    assert fmt.to_float(np.array([-128, 8, 127])).tolist() == [-8.0, 0.5, 127 / 16]
    assert fmt.saturate(np.array([-300, 5, 300])).tolist() == [-128, 5, 127]
