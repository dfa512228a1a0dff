"""cocotb tests of the sigma-delta encoder's Verilog, bit for bit against the integer reference.

Started by ``tests/test_sigma_delta_cocotb.py`` through :func:`poise.sim.cocotb_runner.run_cocotb` with
params ``width``, ``frac`` (the format), ``seed`` and ``count``; the vectors are regenerated here from the seed.
Payloads are packed and unpacked with the component's own layouts, never with hand-written bit offsets.
"""

from __future__ import annotations

from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly
from fixed_vectors import sigma_delta_vectors

from poise.golden.fixed import FixedFormat, sigma_delta_fixed
from poise.rtl.sigma_delta import input_layout, output_layout
from poise.sim.cocotb_runner import tb_params


async def reset(dut: Any) -> None:
    """Start the clock and hold the synchronous reset for two cycles with both streams idle."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def stream_through(
    dut: Any,
    fmt: FixedFormat,
    a: np.ndarray,
    phi: np.ndarray,
    rng: np.random.Generator,
    p_valid: float,
    p_ready: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Offer every ``(a, phi)`` with random gaps, take results under random back-pressure, check stream rules.

    Inputs change just after the falling edge; after they settle (``ReadOnly``) the handshakes are read, which
    are what the next rising edge acts on. Returns ``(q, phi_new, cycles)``.
    """
    in_layout, out_layout = input_layout(fmt), output_layout(fmt)
    count = len(a)
    q_out: list[int] = []
    phi_out: list[int] = []
    sent, offering, cycles, stalled = 0, False, 0, None
    while len(q_out) < count:
        await FallingEdge(dut.clk)
        offering = offering or (sent < count and rng.random() < p_valid)
        dut.i__valid.value = int(offering)
        if offering:
            dut.i__payload.value = in_layout.const({"a": int(a[sent]), "phi": int(phi[sent])}).as_bits()
        dut.o__ready.value = int(rng.random() < p_ready)
        await ReadOnly()
        cycles += 1
        if offering and dut.i__ready.value:
            offering, sent = False, sent + 1
        o_valid, o_ready, o_bits = bool(dut.o__valid.value), bool(dut.o__ready.value), dut.o__payload.value
        if stalled is not None:
            assert o_valid, f"cycle {cycles}: o__valid dropped before the result was taken"
            assert o_bits == stalled, f"cycle {cycles}: o__payload changed while stalled"
        stalled = o_bits if o_valid and not o_ready else None
        if o_valid and o_ready:
            assert len(q_out) < sent, f"cycle {cycles}: a result came out before its request went in"
            result = out_layout.from_bits(o_bits.to_unsigned())
            q_out.append(result.q)
            phi_out.append(result.phi)
        assert cycles < 20 * count + 100, f"stuck after {len(q_out)} of {count} results"
    return np.array(q_out, dtype=np.int64), np.array(phi_out, dtype=np.int64), cycles


def check_bit_exact(fmt: FixedFormat, a: np.ndarray, phi: np.ndarray, q: np.ndarray, phi_new: np.ndarray) -> None:
    """Assert every result equals :func:`sigma_delta_fixed`; the message names the first mismatching vectors."""
    q_ref, phi_ref = sigma_delta_fixed(a, phi, fmt)
    bad = np.flatnonzero((q != q_ref) | (phi_new != phi_ref))
    assert bad.size == 0, f"{bad.size} of {len(a)} vectors differ; first ones:\n" + "\n".join(
        f"  vector {k}: a={a[k]} phi={phi[k]}: rtl q={q[k]} phi={phi_new[k]}, reference q={q_ref[k]} phi={phi_ref[k]}"
        for k in bad[:5]
    )


def setup() -> tuple[FixedFormat, np.random.Generator, int]:
    params = tb_params()
    return FixedFormat(params["width"], params["frac"]), np.random.default_rng(params["seed"]), params["count"]


@cocotb.test()
async def matches_reference_under_back_pressure(dut: Any) -> None:
    """Edge and random vectors, random input gaps and output stalls: every result bit-exact, in order."""
    fmt, rng, count = setup()
    a, phi = sigma_delta_vectors(fmt, count, rng)
    await reset(dut)
    q, phi_new, _ = await stream_through(dut, fmt, a, phi, rng, p_valid=0.7, p_ready=0.6)
    check_bit_exact(fmt, a, phi, q, phi_new)


@cocotb.test()
async def one_result_per_cycle(dut: Any) -> None:
    """With no gaps and no back-pressure, n results take n + 1 cycles (one cycle of latency)."""
    fmt, rng, _ = setup()
    a, phi = sigma_delta_vectors(fmt, 400, rng)
    await reset(dut)
    q, phi_new, cycles = await stream_through(dut, fmt, a, phi, rng, p_valid=1.0, p_ready=1.0)
    assert cycles == len(a) + 1, f"{len(a)} results took {cycles} cycles"
    check_bit_exact(fmt, a, phi, q, phi_new)
