"""Fixed-point formats and the bit-exact integer references that the RTL is checked against.

Values are carried as *raw* integers: a raw ``r`` in a :class:`FixedFormat` stands for ``r / 2**frac``.
The functions here work on NumPy ``int64`` arrays of raw integers, vectorised over any shape, and each
states its rounding and saturation rule once; the RTL generator implements exactly that rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Widest format whose sigma-delta intermediate (width + 2 bits, see sigma_delta_fixed) fits in int64.
MAX_WIDTH = 62


@dataclass(frozen=True)
class FixedFormat:
    """A signed two's-complement fixed-point format of ``width`` bits, ``frac`` of them after the point.

    A raw integer ``r`` in ``[min_raw, max_raw] = [-2**(width-1), 2**(width-1) - 1]`` stands for
    ``r / 2**frac``; the resolution is ``2**-frac``. ``FixedFormat(16, 12)`` is Q3.12 plus a sign bit.

    Raises
    ------
    ValueError
        If ``width`` is not in ``1..MAX_WIDTH`` or ``frac`` is not in ``0..width-1``.
    """

    width: int
    frac: int

    def __post_init__(self) -> None:
        if not (isinstance(self.width, int) and 1 <= self.width <= MAX_WIDTH):
            raise ValueError(f"width must be an int in 1..{MAX_WIDTH}, not {self.width!r}")
        if not (isinstance(self.frac, int) and 0 <= self.frac < self.width):
            raise ValueError(f"frac must be an int in 0..width-1 = 0..{self.width - 1}, not {self.frac!r}")

    @property
    def min_raw(self) -> int:
        """Most negative raw value, ``-2**(width-1)``."""
        return -(1 << (self.width - 1))

    @property
    def max_raw(self) -> int:
        """Most positive raw value, ``2**(width-1) - 1``."""
        return (1 << (self.width - 1)) - 1

    @property
    def one(self) -> int:
        """Raw value of 1.0 (``2**frac``; it need not lie inside the format's range)."""
        return 1 << self.frac

    def saturate(self, raw: np.ndarray) -> np.ndarray:
        """Clamp raw integers to ``[min_raw, max_raw]`` (saturation, never wrap-around)."""
        return np.clip(raw, self.min_raw, self.max_raw)

    def to_float(self, raw: np.ndarray) -> np.ndarray:
        """The real values ``raw / 2**frac`` as float64 (exact for ``width <= 53``)."""
        return np.asarray(raw, dtype=np.int64).astype(np.float64) / float(self.one)

    def contains(self, raw: np.ndarray) -> np.ndarray:
        """Elementwise: does ``raw`` lie in ``[min_raw, max_raw]``?"""
        raw = np.asarray(raw)
        return (raw >= self.min_raw) & (raw <= self.max_raw)


def sigma_delta_fixed(a: np.ndarray, phi: np.ndarray, fmt: FixedFormat) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-delta encoder on raw fixed-point integers, [000] Eq. 11: q = [φ + a > ½], φ ← φ + a − q.

    ``a`` and ``phi`` are raw integers of ``fmt`` (broadcast against each other). The sum ``φ + a`` and the
    difference ``φ + a − q`` are formed exactly (no rounding: ½ and 1 are exact because ``fmt.frac >= 1``);
    the comparison is strict, so ``φ + a = ½`` gives ``q = 0``. The only inexact step is that the new φ
    **saturates** to ``[fmt.min_raw, fmt.max_raw]``: with q = 1 it can only overflow upwards, with q = 0 only
    downwards. Whenever no saturation happens the result equals the real-valued Eq. 11 exactly.

    Returns ``(q, phi_new)`` as int64 arrays: q in {0, 1}, phi_new raw in ``fmt``.

    Raises
    ------
    ValueError
        If ``fmt.frac < 1`` (½ would not be representable) or an input lies outside ``fmt``.
    """
    if fmt.frac < 1:
        raise ValueError(f"sigma-delta needs at least one fraction bit to represent 1/2, not {fmt}")
    a = np.asarray(a, dtype=np.int64)
    phi = np.asarray(phi, dtype=np.int64)
    for name, raw in (("a", a), ("phi", phi)):
        if not fmt.contains(raw).all():
            raise ValueError(f"{name} has raw values outside {fmt} ([{fmt.min_raw}, {fmt.max_raw}])")
    total = phi + a  # width + 1 bits: exact
    q = (total > (fmt.one >> 1)).astype(np.int64)
    phi_new = fmt.saturate(total - q * fmt.one)  # width + 2 bits before saturation
    return q, phi_new
