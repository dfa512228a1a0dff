"""cocotb tests of the sigma-delta encoder's Verilog, bit for bit against the integer reference.

Started by ``tests/test_sigma_delta_cocotb.py`` through :func:`poise.sim.cocotb_runner.run_cocotb` with
params ``width``, ``frac`` (the format), ``seed`` and ``count``; the vectors are regenerated here from the seed.
Payloads are packed and unpacked with the component's own layouts, never with hand-written bit offsets.
"""

from __future__ import annotations

from typing import Any

import cocotb
import numpy as np
from fixed_vectors import assert_sigma_delta_exact, sigma_delta_vectors

from poise.golden.fixed import FixedFormat
from poise.rtl.sigma_delta import input_layout, output_layout
from poise.sim.cocotb_runner import tb_params
from poise.sim.streams import columns, pack_fields, reset, stream_through, unpack_fields


async def run_pairs(dut: Any, fmt: FixedFormat, a: np.ndarray, phi: np.ndarray, rng: np.random.Generator,
                    p_valid: float, p_ready: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Stream every ``(a, phi)`` through with :func:`stream_through`; returns ``(q, phi_new, cycles)``."""
    rows, cycles = await stream_through(dut, len(a), pack_fields(input_layout(fmt), {"a": a, "phi": phi}),
                                        unpack_fields(output_layout(fmt), ("q", "phi")), rng, p_valid, p_ready)
    got = columns(rows, ("q", "phi"))
    return got["q"], got["phi"], cycles


def setup() -> tuple[FixedFormat, np.random.Generator, int]:
    params = tb_params()
    return FixedFormat(params["width"], params["frac"]), np.random.default_rng(params["seed"]), params["count"]


@cocotb.test()
async def matches_reference_under_back_pressure(dut: Any) -> None:
    """Edge and random vectors, random input gaps and output stalls: every result bit-exact, in order."""
    fmt, rng, count = setup()
    a, phi = sigma_delta_vectors(fmt, count, rng)
    await reset(dut)
    q, phi_new, _ = await run_pairs(dut, fmt, a, phi, rng, p_valid=0.7, p_ready=0.6)
    assert_sigma_delta_exact(fmt, a, phi, q, phi_new)


@cocotb.test()
async def one_result_per_cycle(dut: Any) -> None:
    """With no gaps and no back-pressure, n results take n + 1 cycles (one cycle of latency)."""
    fmt, rng, _ = setup()
    a, phi = sigma_delta_vectors(fmt, 400, rng)
    await reset(dut)
    q, phi_new, cycles = await run_pairs(dut, fmt, a, phi, rng, p_valid=1.0, p_ready=1.0)
    assert cycles == len(a) + 1, f"{len(a)} results took {cycles} cycles"
    assert_sigma_delta_exact(fmt, a, phi, q, phi_new)
