"""cocotb tests for checking the runner itself: one passes, one holds a deliberately wrong expectation.

Run on the sigma-delta encoder by ``tests/test_cocotb_runner.py`` with params ``width`` and ``frac``.
``wrong_expectation`` expects a spike for a = φ = 0 and must fail, unless param ``expected_q`` (or, without it,
the environment variable ``POISE_EXPECTED_Q``) is 0.
"""

from __future__ import annotations

import os
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from poise.golden.fixed import FixedFormat
from poise.rtl.sigma_delta import input_layout, output_layout
from poise.sim.cocotb_runner import tb_params


async def start(dut: Any) -> None:
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 1
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def idle_after_reset(dut: Any) -> None:
    """Right after reset nothing is offered, so no result is valid (true for any correct encoder)."""
    await start(dut)
    await ReadOnly()
    assert not dut.o__valid.value


@cocotb.test()
async def wrong_expectation(dut: Any) -> None:
    """Encode a = 0, φ = 0, then expect a spike: wrong on purpose (Eq. 11 gives q = 0)."""
    params = tb_params()
    fmt = FixedFormat(params["width"], params["frac"])
    expected = params.get("expected_q", int(os.environ.get("POISE_EXPECTED_Q", "1")))
    await start(dut)
    dut.i__payload.value = input_layout(fmt).const({"a": 0, "phi": 0}).as_bits()
    dut.i__valid.value = 1
    await FallingEdge(dut.clk)
    dut.i__valid.value = 0
    await ReadOnly()
    assert dut.o__valid.value
    result = output_layout(fmt).from_bits(dut.o__payload.value.to_unsigned())
    assert result.q == expected, f"expected q = {expected} for a = phi = 0, got q = {result.q}"
