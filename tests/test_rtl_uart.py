# amaranth: UnusedElaboratable=no
"""The UART in Amaranth's simulator: the transmitter's waveform bit by bit, a receiver fed by a bit-level
line model at real divisors (3 Mbaud and 115200 baud from 12 MHz), parity, and the error counters."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from poise.rtl.uart import UARTReceiver, UARTTransmitter

DIVISORS = {"3 Mbaud at 12 MHz": 4, "115200 baud at 12 MHz": 104, "odd divisor": 7}


def frame_bits(byte: int, parity: str, stop: int = 1, flip_parity: bool = False) -> list[int]:
    data = [byte >> k & 1 for k in range(8)]
    bits = [0, *data]
    if parity != "none":
        bit = sum(data) % 2 ^ (parity == "odd") ^ flip_parity
        bits.append(bit)
    return [*bits, stop]


@pytest.mark.parametrize("parity", ["none", "even", "odd"])
@pytest.mark.parametrize("name", list(DIVISORS))
def test_transmitter_waveform_is_the_frame_bit_by_bit(name, parity):
    divisor, payload = DIVISORS[name], [0x00, 0xFF, 0xA5, 0x3C]
    dut = UARTTransmitter(divisor, parity)
    line: list[int] = []

    async def producer(ctx):
        for byte in payload:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def recorder(ctx):
        for _ in range(len(payload) * 12 * divisor + 20):
            line.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(recorder)
    sim.run()
    # Decode the recorded line: every frame's bits, each held exactly `divisor` cycles, the frames back to back
    # (the producer offers each byte as soon as the previous one is taken).
    samples, start, got = np.array(line), 0, []
    for index, byte in enumerate(payload):
        gap = int(np.argmax(samples[start:] == 0))  # cycles to the start bit's first cycle
        assert index == 0 or gap == 0, f"byte {index} starts {gap} cycles after the previous stop bit"
        start += gap
        expected = frame_bits(byte, parity)
        for k, bit in enumerate(expected):
            chunk = samples[start + k * divisor:start + (k + 1) * divisor]
            assert (chunk == bit).all(), f"byte {byte:#04x}, bit {k}: {chunk.tolist()}"
        got.append(byte)
        start += len(expected) * divisor
    assert got == payload


def drive_line(bits: list[int], divisor: int) -> list[int]:
    """Per-cycle line levels for ``bits``, each bit ``divisor`` cycles long."""
    return [bit for bit in bits for _ in range(divisor)]


def run_receiver(divisor: int, parity: str, levels: list[int], ready: bool = True) -> tuple[list[int], dict]:
    dut = UARTReceiver(divisor, parity)
    got: list[int] = []
    counters: dict = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, int(ready))
        for level in [*levels, *[1] * (4 * divisor)]:
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ready and ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
        if not ready and ctx.get(dut.o.valid):
            got.append(ctx.get(dut.o.payload))
        for name in ("framing_errors", "parity_errors", "overruns"):
            counters[name] = ctx.get(getattr(dut, name))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, counters


@pytest.mark.parametrize("parity", ["none", "even", "odd"])
@pytest.mark.parametrize("name", list(DIVISORS))
def test_receiver_gets_random_bytes_back_to_back(name, parity):
    divisor = DIVISORS[name]
    rng = np.random.default_rng(divisor)
    payload = [0x00, 0xFF, *rng.integers(0, 256, 30).tolist()]
    levels = [1] * 3 * divisor
    for byte in payload:
        levels += drive_line(frame_bits(byte, parity), divisor)
    got, counters = run_receiver(divisor, parity, levels)
    assert got == payload
    assert counters == {"framing_errors": 0, "parity_errors": 0, "overruns": 0}


def test_receiver_counts_framing_and_parity_errors_and_drops_those_bytes():
    divisor = 4
    levels = [1] * 8
    levels += drive_line(frame_bits(0x11, "even"), divisor)
    levels += drive_line(frame_bits(0x22, "even", stop=0), divisor) + [0] * 8 + [1] * 8  # framing error, break
    levels += drive_line(frame_bits(0x33, "even", flip_parity=True), divisor)  # parity error
    levels += drive_line(frame_bits(0x44, "even"), divisor)
    levels += [1, 1, 0, 1, 1, 1, 1, 1]  # a one-cycle glitch is no start bit
    got, counters = run_receiver(divisor, "even", levels)
    assert got == [0x11, 0x44]
    assert counters == {"framing_errors": 1, "parity_errors": 1, "overruns": 0}


def test_receiver_counts_overruns_when_nobody_reads():
    divisor = 4
    levels = [1] * 8
    for byte in (0x01, 0x02, 0x03):
        levels += drive_line(frame_bits(byte, "none"), divisor)
    got, counters = run_receiver(divisor, "none", levels, ready=False)
    assert got == [0x03] and counters["overruns"] == 2


@pytest.mark.parametrize(("divisor", "parity"), [(3, "none"), (4.5, "none"), (8, "mark")])
def test_bad_parameters_are_refused(divisor, parity):
    with pytest.raises(ValueError):
        UARTReceiver(divisor, parity)
    with pytest.raises(ValueError):
        UARTTransmitter(divisor, parity)
