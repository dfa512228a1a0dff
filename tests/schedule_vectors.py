"""Lookups of the schedule ROM and what each must return, read straight from the spec's tables.

Shared by the Amaranth-simulator tests and the cocotb test module (which regenerates the lookups from a seed).
"""

from __future__ import annotations

import numpy as np

from poise.golden.fixed import FixedPointSpec
from poise.rtl.schedule import ROMS, index_shape, response_layout, word_names

FIELDS = ("epsilon", "lam", "inv_lam", "error")


def fields(fixed: FixedPointSpec) -> tuple[str, ...]:
    """The response fields ``fixed`` has, in :data:`FIELDS` order."""
    return (*word_names(fixed), "error")


def lookups(fixed: FixedPointSpec, rng: np.random.Generator) -> np.ndarray:
    """Every code of the t port (0, 1..T and past T) in random order, then every valid t again, shuffled."""
    every = rng.permutation(1 << index_shape(fixed).width)
    valid = rng.permutation(np.arange(1, fixed.steps + 1))
    return np.concatenate([every, valid]).astype(np.int64)


def expected(fixed: FixedPointSpec, t: np.ndarray) -> dict[str, np.ndarray]:
    """The words the integer model reads at step t (``rom[t − 1]``, t = 1..T); zero words and error = 1 outside."""
    t = np.asarray(t, np.int64)
    in_range = (t >= 1) & (t <= fixed.steps)
    address = np.where(in_range, t - 1, 0)
    words = {name: np.where(in_range, np.array(getattr(fixed, ROMS[name]), np.int64)[address], 0)
             for name in word_names(fixed)}
    return {**words, "error": (~in_range).astype(np.int64)}


def assert_matches(fixed: FixedPointSpec, t: np.ndarray, got: dict[str, np.ndarray]) -> None:
    """Every field of every response equals :func:`expected`; the message names the first mismatches."""
    want = expected(fixed, t)
    assert set(got) == set(want) == set(response_layout(fixed).members)
    lines = [f"  lookup {k} (t = {t[k]}), {name}: rtl {got[name][k]}, tables {want[name][k]}"
             for name in fields(fixed) for k in np.flatnonzero(got[name] != want[name])[:3]]
    assert not lines, "schedule ROM differs from the spec's tables:\n" + "\n".join(lines)
