"""Test vectors for the neuron update: edge values of every field, mixed at random, then seeded random values.

Shared by the Amaranth-simulator tests and the cocotb test module (which regenerates them from a seed), with
the specs the tests run on, built from the spec objects (never restated numbers), and the bit-exact check.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from fixed_vectors import edge_values

from poise.golden.fixed import FixedFormat, FixedPointSpec, derive_fixed_spec
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.neuron_ref import OUTPUTS, input_fields
from poise.golden.spec import SpikingOptions, default_spec

LAYERS = (784, 32, 10)


def small_model(mode: str = "spike", predictive: bool = True, beta: float | None = None,
                **fixed_options: object) -> IntegerSpikingModel:
    """A freshly initialised 784-32-10 spiking network in fixed point, spec derived with ``fixed_options``."""
    options = SpikingOptions(input_mode=mode)
    if not predictive:
        options = dataclasses.replace(options, predictive=None)
    spec = default_spec("spiking", LAYERS).replace(spiking=options)
    if beta is not None:
        spec = spec.replace(beta=beta)
    params = build_model(spec).params
    return IntegerSpikingModel.from_float(spec, params, derive_fixed_spec(spec, params, **fixed_options))


def narrow_spec() -> FixedPointSpec:
    """Formats too narrow for the network, so that v, p, a and φ saturate often; floor rounding, 2|β| = 0.6."""
    fixed = small_model("current", beta=0.3, weight_bits=6, state_frac=10, rounding="floor").fixed
    frac = fixed.state.frac
    return dataclasses.replace(fixed, decoded=FixedFormat(frac + 3, frac), pressure=FixedFormat(frac + 3, frac),
                               encoder=FixedFormat(frac + 4, frac))


def unsigned_edges(fmt: FixedFormat, rom: tuple[int, ...] | None) -> np.ndarray:
    """Edge words of an unsigned ROM port of ``fmt``: 0, 1 LSB, 1.0, the largest word, the ROM's ends."""
    top = fmt.max_raw
    values = [0, 1, fmt.one - 1, fmt.one, top] + ([min(rom), max(rom)] if rom else [])
    return np.unique(np.array([v for v in values if 0 <= v <= top], dtype=np.int64))


def neuron_vectors(fixed: FixedPointSpec, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` raw update requests (keys :func:`~poise.golden.neuron_ref.input_fields`).

    The first eighth takes every field from its edge values (0, ±1 LSB, ½, 1, the format's limits; s and
    ρ_prev at 0, 1 LSB, ½ and 1; ROM words 0, 1.0, the largest and the ROM's own ends), vector 0 is all zero
    but for the ROM words. The rest takes each field from its edges with probability 0.3, else uniformly:
    half over the whole format, half over the working range (the real ROM words, |φ| ≤ 1, u, v and offset
    within an eighth of their range).
    """
    one = fixed.state.one
    s_edges = np.array([0, 1, one // 2, one - 1, one], dtype=np.int64)
    signed_formats = {"u": fixed.accumulator, "v": fixed.decoded, "phi": fixed.encoder, "offset": fixed.pressure}
    roms = {"epsilon": (fixed.epsilon_format, fixed.epsilon_rom), "lam": (fixed.lambda_format, fixed.lambda_rom),
            "inv_lam": (fixed.inv_lambda_format, fixed.inv_lambda_rom)}
    edge_only = count // 8
    vectors = {}
    for name in input_fields(fixed):
        if name in signed_formats:
            fmt = signed_formats[name]
            edges = edge_values(fmt)
            working = min(one, fmt.max_raw) if name == "phi" else fmt.max_raw // 8
            wide = rng.integers(fmt.min_raw, fmt.max_raw, count, endpoint=True)
            narrow = rng.integers(-working, working, count, endpoint=True)
        elif name in ("s", "rho_prev"):
            edges = s_edges
            wide = narrow = rng.integers(0, one, count, endpoint=True)
        elif name in roms:
            fmt, rom = roms[name]
            edges = unsigned_edges(fmt, rom)
            wide = rng.integers(0, fmt.max_raw, count, endpoint=True)
            narrow = rng.choice(np.array(rom, dtype=np.int64), count)
        else:  # the flags
            edges = np.array([0, 1], dtype=np.int64)
            wide = narrow = rng.integers(0, 1, count, endpoint=True)
        value = np.where(rng.random(count) < 0.5, wide, narrow)
        from_edges = (rng.random(count) < 0.3) | (np.arange(count) < edge_only)
        value = np.where(from_edges, rng.choice(edges, count), value)
        if name not in roms:
            value[0] = 0
        vectors[name] = value.astype(np.int64)
    return vectors


def assert_bit_exact(fixed: FixedPointSpec, vectors: dict[str, np.ndarray], got: dict[str, np.ndarray],
                     expected: dict[str, np.ndarray]) -> None:
    """Every output field of every vector equals ``expected``; the message names the first mismatches
    (vector index, field, both values and the request)."""
    lines = []
    for name in OUTPUTS:
        for k in np.flatnonzero(got[name] != expected[name])[:3]:
            inputs = ", ".join(f"{field}={vectors[field][k]}" for field in input_fields(fixed))
            lines.append(f"  vector {k}, {name}: rtl {got[name][k]}, reference {expected[name][k]} ({inputs})")
    assert not lines, "RTL differs from the reference:\n" + "\n".join(lines)
