# amaranth: UnusedElaboratable=no
"""The SoC at the pins in Amaranth's simulator: requests as UART waveforms on ``uart_rx``, replies decoded
from ``uart_tx``; the status LEDs, and UART line errors counted and reported by STATUS."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from test_rtl_controller import small_model

from poise.errors import PoiseError
from poise.firmware.framing import FrameSplitter, pack_frame, unpack_frame
from poise.firmware.messages import Info, Status
from poise.firmware.protocol import ErrorCode, Opcode, decode_packet, encode_packet
from poise.rtl.geometry import CoreGeometry
from poise.rtl.soc import SoC, SoCConfig, device_info

DIVISOR = 4
CONFIG = SoCConfig(clock_hz=40_000, baud=10_000, lanes=2, max_body=300)  # LED hold: 10,000 cycles


def line_levels(data: bytes, stop: int = 1) -> list[int]:
    """The UART waveform of ``data``, one level per clock cycle."""
    levels = []
    for byte in data:
        for bit in [0, *(byte >> k & 1 for k in range(8)), stop]:
            levels += [bit] * DIVISOR
    return levels


def test_soc_answers_on_its_pins_lights_its_leds_and_counts_line_errors():
    model = small_model()
    geometry = CoreGeometry(model.spec, model.fixed, CONFIG.lanes)
    dut = SoC(geometry, model.weights, model.biases, CONFIG)
    bad = bytearray(pack_frame(encode_packet(7, Opcode.INFO)))
    bad[-2] ^= 0x01 if bad[-2] != 0x01 else 0x02  # a CRC byte: the header still reads
    status_request = pack_frame(encode_packet(2, Opcode.STATUS))
    script = (line_levels(pack_frame(encode_packet(1, Opcode.INFO))) + [1] * 2000 + line_levels(bytes(bad))
              + [1] * 2000 + line_levels(b"\x55", stop=0) + [1] * 200 + line_levels(status_request) + [1] * 30_000)
    tx: list[int] = []
    leds: list[tuple[int, int, int]] = []

    async def bench(ctx):
        for level in script:
            ctx.set(dut.uart_rx, level)
            _, _, line, idle, busy, error = await ctx.tick().sample(dut.uart_tx, dut.led_idle, dut.led_busy,
                                                                    dut.led_error)
            tx.append(line)
            leds.append((idle, busy, error))

    sim = Simulator(dut)
    sim.add_clock(1 / CONFIG.clock_hz)
    sim.add_testbench(bench)
    sim.run()
    received, k = bytearray(), 0
    while k < len(tx) - 10 * DIVISOR:  # decode uart_tx: each bit sampled in its middle
        if tx[k] == 0:
            bits = [tx[k + DIVISOR // 2 + DIVISOR * n] for n in range(10)]
            assert bits[9] == 1, f"the transmitter's stop bit at cycle {k} is low"
            received.append(sum(bit << n for n, bit in enumerate(bits[1:9])))
            k += 10 * DIVISOR - DIVISOR // 2
        else:
            k += 1
    packets = [decode_packet(unpack_frame(f)) for f in FrameSplitter().feed(bytes(received))]
    assert [(p.sequence, p.opcode) for p in packets] == [(1, Opcode.INFO | 0x80), (7, Opcode.ERROR),
                                                          (2, Opcode.STATUS | 0x80)]
    assert Info.decode(packets[0].payload) == device_info(geometry, CONFIG)
    assert packets[1].payload == bytes((ErrorCode.BAD_CRC, Opcode.INFO))
    status = Status.decode(packets[2].payload)
    assert (status.framing_errors, status.bad_frames, status.refused) == (1, 1, 0)
    idle, busy, error = (np.array(column) for column in zip(*leds, strict=True))
    assert (idle == 1 - busy).all(), "the idle and busy LEDs are complements"
    assert busy[:100].any() and idle[-100:].all(), "busy while a request is handled, idle at the end"
    assert not error[:2000].any(), "no error before the first bad frame"
    lit = np.flatnonzero(error)
    assert len(lit) > 0 and error[-100:].sum() == 0, "the error LED lights after an error and goes out again"


def test_a_baud_rate_the_clock_cannot_make_is_refused_with_the_numbers():
    with pytest.raises(PoiseError, match="cannot make 3000000 baud"):
        _ = SoCConfig(clock_hz=10_000_000, baud=3_000_000).divisor
