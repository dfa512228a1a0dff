"""cocotb tests of the schedule ROM's Verilog, bit for bit against the spec's ε, λ and 1/λ tables.

Started by ``tests/test_schedule_cocotb.py`` through :func:`poise.sim.cocotb_runner.run_cocotb` with params
``fixed`` (the :class:`~poise.golden.fixed.FixedPointSpec` as a dict) and ``seed`` (the lookups are regenerated
here). Payloads are packed and unpacked with the component's own layouts, never with hand-written bit offsets.
"""

from __future__ import annotations

from typing import Any

import cocotb
import numpy as np
from schedule_vectors import assert_matches, fields, lookups

from poise.golden.fixed import FixedPointSpec
from poise.rtl.schedule import ScheduleROM, request_layout, response_layout
from poise.sim.cocotb_runner import tb_params
from poise.sim.streams import columns, reset, stream_through, unpack_fields


async def run_lookups(dut: Any, fixed: FixedPointSpec, t: np.ndarray, rng: np.random.Generator, p_valid: float,
                      p_ready: float) -> tuple[dict[str, np.ndarray], int]:
    """Stream the lookups through with :func:`stream_through`; the responses as one array per field."""
    layout = request_layout(fixed)
    rows, cycles = await stream_through(dut, len(t), lambda k: layout.const({"t": int(t[k])}).as_bits(),
                                        unpack_fields(response_layout(fixed), fields(fixed)), rng, p_valid, p_ready)
    return columns(rows, fields(fixed)), cycles


def setup() -> tuple[FixedPointSpec, np.random.Generator]:
    params = tb_params()
    return FixedPointSpec.from_dict(params["fixed"]), np.random.default_rng(params["seed"])


@cocotb.test()
async def matches_tables_under_back_pressure(dut: Any) -> None:
    """Every t code in random order, random input gaps and output stalls: every word bit-exact, in order."""
    fixed, rng = setup()
    t = lookups(fixed, rng)
    await reset(dut)
    got, _ = await run_lookups(dut, fixed, t, rng, p_valid=0.7, p_ready=0.6)
    assert_matches(fixed, t, got)


@cocotb.test()
async def one_lookup_per_cycle(dut: Any) -> None:
    """With no gaps and no back-pressure, n lookups take n + LATENCY cycles."""
    fixed, rng = setup()
    t = lookups(fixed, rng)
    await reset(dut)
    got, cycles = await run_lookups(dut, fixed, t, rng, p_valid=1.0, p_ready=1.0)
    assert cycles == len(t) + ScheduleROM.LATENCY, f"{len(t)} lookups took {cycles} cycles"
    assert_matches(fixed, t, got)
