"""Drive a component's ``i`` stream and drain its ``o`` stream (``amaranth.lib.stream``) in a simulation.

Both simulators get the same traffic: request ``k`` is offered with probability ``p_valid`` per idle cycle and,
once offered, held until taken; ``o.ready`` is drawn with probability ``p_ready`` every cycle. On the way the
stream rules are checked: a result held back by ``o.ready = 0`` stays valid and unchanged, nothing comes out
that was not put in, and the stream does not get stuck. Payloads travel as integers, packed and unpacked by
the caller (:func:`pack_fields` and :func:`unpack_fields` do it with a component's layouts).

- :func:`simulate_stream` runs a component in Amaranth's simulator with the :func:`produce` and
  :func:`consume` testbenches.
- :func:`reset` and :func:`stream_through` do the same inside a cocotb test; cocotb is imported only there,
  so this module also imports in a plain Python process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from amaranth.lib import data, wiring
from amaranth.sim import Simulator

Pack = Callable[[int], int]
"""Payload bits of request ``k``."""

Unpack = Callable[[int], tuple[int, ...]]
"""The fields of a result, from its payload bits."""


def pack_fields(layout: data.Layout, vectors: Mapping[str, np.ndarray]) -> Pack:
    """Pack request ``k`` from ``vectors[field][k]`` for every field of ``layout``."""
    names = list(layout.members)
    return lambda k: layout.const({name: int(vectors[name][k]) for name in names}).as_bits()


def unpack_fields(layout: data.Layout, names: Sequence[str]) -> Unpack:
    """Unpack a result into the values of ``names``, fields of ``layout``."""
    return lambda bits: tuple(getattr(layout.from_bits(bits), name) for name in names)


def columns(rows: Sequence[tuple[int, ...]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The unpacked results as one int64 array per field of ``names``."""
    table = np.array(rows, dtype=np.int64).reshape(-1, len(names))
    return {name: table[:, k] for k, name in enumerate(names)}


def _cycle_limit(count: int) -> int:
    return 20 * count + 100


# Amaranth simulator -------------------------------------------------------------------------------------------


async def produce(ctx: Any, dut: wiring.Component, count: int, pack: Pack, rng: np.random.Generator,
                  p_valid: float) -> None:
    """Testbench offering ``count`` requests on ``dut.i``; an offer is held, whatever ``i.ready`` is, until taken."""
    payload = dut.i.payload.as_value()
    sent, offering = 0, False
    while sent < count:
        offering = offering or rng.random() < p_valid
        ctx.set(dut.i.valid, offering)
        if offering:
            ctx.set(payload, pack(sent))
        _, _, i_ready = await ctx.tick().sample(dut.i.ready)
        if offering and i_ready:
            offering, sent = False, sent + 1
    ctx.set(dut.i.valid, 0)


async def consume(ctx: Any, dut: wiring.Component, count: int, unpack: Unpack, rng: np.random.Generator,
                  p_ready: float, out: list[tuple[int, ...]]) -> int:
    """Testbench taking ``count`` results from ``dut.o`` into ``out`` under random back-pressure; returns the
    cycles taken. Checks the stream rules against the requests ``dut.i`` accepted."""
    payload = dut.o.payload.as_value()
    accepted, cycles, stalled = 0, 0, None
    while len(out) < count:
        o_ready = rng.random() < p_ready
        ctx.set(dut.o.ready, o_ready)
        _, _, i_valid, i_ready, o_valid, o_bits = await ctx.tick().sample(
            dut.i.valid, dut.i.ready, dut.o.valid, payload
        )
        cycles += 1
        if stalled is not None:
            assert o_valid, f"cycle {cycles}: o.valid dropped before the result was taken"
            assert o_bits == stalled, f"cycle {cycles}: o.payload changed while stalled"
        stalled = o_bits if o_valid and not o_ready else None
        accepted += int(bool(i_valid and i_ready))
        if o_valid and o_ready:
            assert len(out) < accepted, f"cycle {cycles}: a result came out before its request went in"
            out.append(unpack(o_bits))
        assert cycles < _cycle_limit(count), f"stuck after {len(out)} of {count} results"
    return cycles


def simulate_stream(dut: wiring.Component, count: int, pack: Pack, unpack: Unpack, rng: np.random.Generator,
                    p_valid: float, p_ready: float) -> tuple[list[tuple[int, ...]], int]:
    """Stream ``count`` requests through ``dut`` in Amaranth's simulator; returns the unpacked results, in
    order, and the cycles until the last was taken."""
    out: list[tuple[int, ...]] = []
    cycles = 0

    async def producer(ctx: Any) -> None:
        await produce(ctx, dut, count, pack, rng, p_valid)

    async def consumer(ctx: Any) -> None:
        nonlocal cycles
        cycles = await consume(ctx, dut, count, unpack, rng, p_ready, out)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)  # the consumer decides when the simulation ends
    sim.add_testbench(consumer)
    sim.run()
    return out, cycles


# cocotb -------------------------------------------------------------------------------------------------------


async def reset(dut: Any) -> None:
    """Start a 10 ns clock and hold the synchronous reset for two cycles with both streams idle."""
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def stream_through(dut: Any, count: int, pack: Pack, unpack: Unpack, rng: np.random.Generator,
                         p_valid: float, p_ready: float) -> tuple[list[tuple[int, ...]], int]:
    """Stream ``count`` requests through the simulated ``dut``; returns the unpacked results and the cycles.

    Inputs change just after the falling edge; after they settle (``ReadOnly``) the handshakes are read, which
    are what the next rising edge acts on.
    """
    from cocotb.triggers import FallingEdge, ReadOnly

    out: list[tuple[int, ...]] = []
    sent, offering, cycles, stalled = 0, False, 0, None
    while len(out) < count:
        await FallingEdge(dut.clk)
        offering = offering or (sent < count and rng.random() < p_valid)
        dut.i__valid.value = int(offering)
        if offering:
            dut.i__payload.value = pack(sent)
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
            assert len(out) < sent, f"cycle {cycles}: a result came out before its request went in"
            out.append(unpack(o_bits.to_unsigned()))
        assert cycles < _cycle_limit(count), f"stuck after {len(out)} of {count} results"
    return out, cycles
