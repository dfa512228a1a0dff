"""The device's CRC-16 against the host reference :func:`poise.firmware.framing.crc16`."""

from collections.abc import Callable

import numpy as np
from amaranth.sim import Simulator

from poise.firmware.framing import crc16
from poise.rtl.crc import Crc16


def simulate(dut: Crc16, bench: Callable) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_crc16_matches_the_host_reference_byte_by_byte_with_gaps_and_restarts():
    rng = np.random.default_rng(5)
    messages = [b"123456789", b"", b"\x00" * 7, b"\xff" * 9, *(bytes(rng.integers(0, 256, n).astype(np.uint8))
                                                              for n in rng.integers(1, 300, 20))]
    dut = Crc16()
    got: list[int] = []

    async def bench(ctx):
        for message in messages:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for byte in message:
                while rng.random() < 0.3:  # idle cycles change nothing
                    ctx.set(dut.valid, 0)
                    await ctx.tick()
                ctx.set(dut.data, byte)
                ctx.set(dut.valid, 1)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            got.append(ctx.get(dut.crc))

    simulate(dut, bench)
    assert got == [crc16(message) for message in messages]
    assert got[0] == 0x29B1


def test_crc16_byte_given_with_clear_continues_the_old_crc():
    """``valid`` takes precedence over ``clear`` (no caller gives both): the byte continues the CRC and the
    restart is dropped."""
    dut = Crc16()
    got: list[int] = []

    async def bench(ctx):
        for byte in b"1234":
            ctx.set(dut.data, byte)
            ctx.set(dut.valid, 1)
            await ctx.tick()
        ctx.set(dut.data, ord("5"))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.valid, 0)
        got.append(ctx.get(dut.crc))
        await ctx.tick()
        ctx.set(dut.clear, 0)
        got.append(ctx.get(dut.crc))

    simulate(dut, bench)
    assert got == [crc16(b"12345"), crc16(b"")]
