# amaranth: UnusedElaboratable=no
"""The device's frame codec in Amaranth's simulator against the host reference :mod:`poise.firmware.framing`:
the sender's bytes under back-pressure, the receiver's packets and statuses for good and hostile input, and a
round trip from one to the other."""

from collections.abc import Callable

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from poise.firmware.framing import (
    MAX_BODY,
    MAX_FRAME,
    FrameError,
    FrameSplitter,
    cobs_decode,
    cobs_encode,
    crc16,
    max_frame,
    pack_frame,
    unpack_frame,
)
from poise.rtl.frame import FrameReceiver, FrameSender, FrameStatus, area_bases


def random_body(rng: np.random.Generator, n: int, zeros: float = 0.1) -> bytes:
    return bytes(np.where(rng.random(n) < zeros, 0, rng.integers(1, 256, n)).astype(np.uint8))


def body_with_crc_byte_zero(rng: np.random.Generator, n: int, index: int) -> bytes:
    """A body of ``n`` non-zero bytes whose CRC has a 0x00 at ``index`` (0: low byte, 1: high byte)."""
    while True:
        body = random_body(rng, n, zeros=0)
        if (crc16(body) >> 8 * index) & 0xFF == 0:
            return body


def expected(frame: bytes, max_body: int) -> tuple[FrameStatus, int, bytes | None]:
    """The receiver's report for ``frame`` (no delimiter): status, length and the buffer's first ``length``
    bytes, decided as the host's unpack_frame decides plus the buffer's limits (see FrameReceiver)."""
    if len(frame) > max_frame(max_body):
        return FrameStatus.TOO_LONG, max_body, None
    index = 0
    while index < len(frame):
        index += frame[index]
    missing = index - len(frame)
    if missing:  # truncated: the bytes decoded before the end (pad the last block to decode them)
        with pytest.raises(FrameError):
            cobs_decode(frame)
        partial = cobs_decode(frame + b"\x01" * missing)[:-missing]
        length = min(len(partial), max_body + 2)
        return FrameStatus.BAD_COBS, length, partial[:length]
    packet = cobs_decode(frame)
    if len(packet) > max_body + 2:
        return FrameStatus.TOO_LONG, max_body, packet[:max_body]
    try:
        body = unpack_frame(frame)
    except FrameError:
        length = len(packet) if len(packet) < 2 else len(packet) - 2
        return FrameStatus.BAD_CRC, length, packet[:length]
    return FrameStatus.OK, len(body), body


def split(stream: bytes) -> list[bytes]:
    """The non-empty frames of a byte stream, each ended by a 0x00."""
    assert stream.endswith(b"\x00")
    return [frame for frame in stream[:-1].split(b"\x00") if frame]


# --- the receiver ---------------------------------------------------------------------------------------

def run_receiver(max_body: int, stream: bytes, seed: int, gaps: float = 0.3, stall: float = 0.3,
                 counters: bool = True) -> tuple:
    """Feed ``stream`` with random gaps; a consumer reads each packet's ``length`` bytes from the buffer
    (after random delays) and takes it. Returns the reports and the counters (none without ``counters``)."""
    dut = FrameReceiver(max_body, counters)
    rng = np.random.default_rng(seed)
    count = len(split(stream))
    reports: list[tuple[FrameStatus, int, bytes]] = []
    totals: dict[str, int] = {}

    async def producer(ctx):
        for byte in stream:
            while rng.random() < gaps:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            while not ctx.get(dut.i.ready):
                await ctx.tick()
            await ctx.tick()
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(reports) < count:
            while not ctx.get(dut.packet.valid) or rng.random() < stall:
                await ctx.tick()
            packet = ctx.get(dut.packet.payload)
            contents = bytearray()
            for address in range(packet.length):
                ctx.set(dut.read_addr, address)
                await ctx.tick()
                contents.append(ctx.get(dut.read_data))
            reports.append((packet.status, packet.length, bytes(contents)))
            ctx.set(dut.packet.ready, 1)
            await ctx.tick()
            ctx.set(dut.packet.ready, 0)
        for _ in range(20):  # nothing more is reported
            assert not ctx.get(dut.packet.valid)
            await ctx.tick()
        if dut.counters:
            totals.update({name: ctx.get(getattr(dut, name)) for name in ("frames", "bad_frames", "long_frames")})

    sim = Simulator(dut)
    sim.add_clock(1 / 12e6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return reports, totals


def check_reports(stream: bytes, max_body: int, reports: list, counters: dict) -> None:
    frames = split(stream)
    assert len(reports) == len(frames)
    for frame, (status, length, contents) in zip(frames, reports, strict=True):
        want_status, want_length, want_contents = expected(frame, max_body)
        assert (status, length) == (want_status, want_length), frame.hex()
        if want_contents is not None:
            assert contents == want_contents, frame.hex()
    statuses = [report[0] for report in reports]
    assert counters == {
        "frames": statuses.count(FrameStatus.OK),
        "bad_frames": statuses.count(FrameStatus.BAD_CRC) + statuses.count(FrameStatus.BAD_COBS),
        "long_frames": statuses.count(FrameStatus.TOO_LONG),
    }


def test_receiver_decodes_good_frames_arriving_with_gaps():
    rng = np.random.default_rng(1)
    max_body = 300
    bodies = [b"", b"\x00", b"\x00" * 40, bytes([5]) * 252, bytes([5]) * 253, bytes([5]) * 254, bytes([5]) * 255,
              random_body(rng, max_body, zeros=0), random_body(rng, max_body, zeros=0.5),
              body_with_crc_byte_zero(rng, 252, 1), body_with_crc_byte_zero(rng, 253, 0),
              *(random_body(rng, n) for n in rng.integers(1, max_body + 1, 6))]
    stream = b"".join(pack_frame(body) for body in bodies)
    reports, counters = run_receiver(max_body, stream, seed=2)
    assert reports == [(FrameStatus.OK, len(body), body) for body in bodies]
    assert counters == {"frames": len(bodies), "bad_frames": 0, "long_frames": 0}


def hostile_stream(rng: np.random.Generator, max_body: int) -> bytes:
    """Good frames mixed with garbage, truncations, bit flips, oversize frames and empty frames."""
    limit = max_frame(max_body)

    def good() -> bytes:
        return pack_frame(random_body(rng, int(rng.integers(0, max_body + 1))))

    def oversize(n: int, crc_ok: bool) -> bytes:
        body = random_body(rng, n)
        crc = crc16(body) ^ (0 if crc_ok else 1)
        return cobs_encode(body + bytes((crc & 0xFF, crc >> 8))) + b"\x00"

    pieces = [b"\x00\x00", b"\x01\x00", b"\x01\x01\x00", b"\x02\x07\x00", b"\x03\x07\x00", b"\xff\x00",
              pack_frame(random_body(rng, max_body, zeros=0)), pack_frame(bytes(max_body)),
              oversize(max_body + 1, True), oversize(max_body + 1, False), oversize(max_body + 40, True),
              *(random_body(rng, n, zeros=0) + b"\x00" for n in (limit, limit + 1, limit + 300)),
              b"\x01" * (limit - 1) + b"\x05\x00",  # truncated at the length limit, decodes too long: bad COBS
              b"\x01" * limit + b"\x05\x00"]  # the same, one byte over the limit
    for _ in range(60):
        kind = rng.integers(5)
        if kind == 0:  # garbage, zeros included
            pieces.append(random_body(rng, int(rng.integers(1, 3 * max_body)), zeros=0.05) + b"\x00")
        elif kind == 1:  # truncated
            frame = good()
            pieces.append(frame[:rng.integers(1, len(frame) - 1)] + b"\x00")
        elif kind == 2:  # bit flips
            frame = bytearray(good())
            for _ in range(rng.integers(1, 3)):
                frame[rng.integers(len(frame) - 1)] ^= 1 << int(rng.integers(8))
            pieces.append(bytes(frame))
        elif kind == 3:
            pieces.append(oversize(int(rng.integers(max_body + 1, 3 * max_body)), bool(rng.integers(2))))
        else:
            pieces.append(good() + b"\x00" * int(rng.integers(3)))
    order = rng.permutation(len(pieces))
    return b"".join(pieces[k] for k in order)


@pytest.mark.parametrize("max_body", [64, 300])
def test_receiver_judges_hostile_input_as_the_host_does_then_still_receives(max_body):
    rng = np.random.default_rng(max_body)
    body = random_body(rng, max_body)
    stream = hostile_stream(rng, max_body) + pack_frame(body)
    reports, counters = run_receiver(max_body, stream, seed=max_body, gaps=0.1, stall=0.1)
    check_reports(stream, max_body, reports, counters)
    assert {report[0] for report in reports} == set(FrameStatus)  # every status was seen
    assert reports[-1] == (FrameStatus.OK, len(body), body)


@pytest.mark.parametrize("max_body", [64, 300])
def test_receiver_reads_back_the_bytes_past_max_body_from_its_registers(max_body):
    """The block RAM holds max_body bytes; a truncated frame that decoded 1 or 2 more (or a longer one, cut
    at max_body + 2) reads them back from the latest two decoded bytes, distinct and non-zero here."""
    rng = np.random.default_rng(max_body + 1)
    frames = [cobs_encode(random_body(rng, n, zeros=0))[:-1] + b"\x00"  # cut: n - 1 bytes decoded
              for n in range(max_body, max_body + 4)]
    frames.append(cobs_encode(random_body(rng, max_body + 3, zeros=0.1))[:-1] + b"\x00")
    frames += [cobs_encode(random_body(rng, max_body + 2, zeros=0)) + b"\x07\x00",  # a code past the end
               pack_frame(random_body(rng, max_body, zeros=0))]
    stream = b"".join(frames)
    reports, counters = run_receiver(max_body, stream, seed=max_body, gaps=0.2, stall=0.2)
    check_reports(stream, max_body, reports, counters)
    assert {length for status, length, _ in reports if status == FrameStatus.BAD_COBS} >= {max_body + 1, max_body + 2}
    assert any(contents[-2:] != bytes(2) for _, length, contents in reports if length > max_body)
    # Without its counters the receiver reports the same.
    assert run_receiver(max_body, stream, seed=max_body, gaps=0.2, stall=0.2, counters=False) == (reports, {})
    assert not hasattr(FrameReceiver(max_body, counters=False), "frames")


def test_receiver_at_max_body_agrees_with_unpack_frame_and_the_splitter():
    rng = np.random.default_rng(7)
    top = random_body(rng, MAX_BODY, zeros=0)
    assert len(pack_frame(top)) - 1 == MAX_FRAME  # the longest valid frame is exactly at the limit
    oversize = random_body(rng, MAX_BODY + 6, zeros=0.1)  # with zeros, it encodes within MAX_FRAME
    crc = crc16(oversize)
    frames = [pack_frame(top), random_body(rng, MAX_FRAME + 1, zeros=0) + b"\x00",
              b"\x01" * (MAX_FRAME - 1) + b"\x05\x00",  # truncated at the limit: bad COBS, though too long
              cobs_encode(oversize + bytes((crc & 0xFF, crc >> 8))) + b"\x00",  # a body pack_frame would refuse
              pack_frame(b"\x01\x00\x02")]
    stream = b"".join(frames)
    reports, counters = run_receiver(MAX_BODY, stream, seed=7, gaps=0, stall=0)
    check_reports(stream, MAX_BODY, reports, counters)
    splitter = FrameSplitter()
    host = splitter.feed(stream)
    assert splitter.dropped_frames == counters["long_frames"] - 1 == 1
    statuses = [report[0] for report in reports]
    assert statuses == [FrameStatus.OK, FrameStatus.TOO_LONG, FrameStatus.BAD_COBS, FrameStatus.TOO_LONG,
                        FrameStatus.OK]
    # The host's unpack_frame accepts exactly the frames reported OK.
    accepted = []
    for frame in host:
        try:
            accepted.append(unpack_frame(frame))
        except FrameError:
            accepted.append(None)
    assert accepted == [top, None, None, b"\x01\x00\x02"]
    assert max_frame(MAX_BODY) == MAX_FRAME


# --- the sender -----------------------------------------------------------------------------------------

async def write_buffer(ctx, dut: FrameSender, body: bytes, base: int = 0) -> None:
    """Write ``body`` into the buffer from ``base`` on (an area's base, addressed as base | offset)."""
    for offset, byte in enumerate(body):
        ctx.set(dut.write_addr, base | offset)
        ctx.set(dut.write_data, byte)
        ctx.set(dut.write_enable, 1)
        await ctx.tick()
    ctx.set(dut.write_enable, 0)


async def request(ctx, dut: FrameSender, length: int, area: int | None = None) -> None:
    """Hand ``length`` (and, for a sender with areas, the ``area``) to ``send`` and wait until the frame is
    out."""
    ctx.set(dut.send.payload, length if area is None else {"length": length, "area": area})
    ctx.set(dut.send.valid, 1)
    while not ctx.get(dut.send.ready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(dut.send.valid, 0)
    assert ctx.get(dut.busy)
    while ctx.get(dut.busy):
        await ctx.tick()


def run_sender(max_body: int, jobs: list[bytes | None], seed: int) -> list[bytes]:
    """Send each body (``None``: send the previous one again) with random back-pressure on ``o``; the frames
    emitted, each with its delimiter."""
    dut = FrameSender(max_body)

    async def produce(ctx):
        length = 0
        for body in jobs:
            if body is not None:
                await write_buffer(ctx, dut, body)
                length = len(body)
            await request(ctx, dut, length)

    return sent_frames(dut, produce, np.random.default_rng(seed), p_ready=0.6)


def sent_frames(dut: FrameSender, produce: Callable, rng: np.random.Generator, p_ready: float) -> list[bytes]:
    """Run the testbench ``produce`` (it writes and sends) while a sink takes each byte of ``o`` with
    probability ``p_ready`` per cycle; the frames emitted, each with its delimiter."""
    emitted = bytearray()
    done = []

    async def producer(ctx):
        await produce(ctx)
        done.append(True)

    async def sink(ctx):
        while not done:
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            if ready and ctx.get(dut.o.valid):
                emitted.append(ctx.get(dut.o.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1 / 12e6)
    sim.add_testbench(producer)
    sim.add_testbench(sink, background=True)
    sim.run()
    return [frame + b"\x00" for frame in bytes(emitted).split(b"\x00")[:-1]]


def sender_bodies(rng: np.random.Generator, top: int) -> list[bytes]:
    edges = [1, 2, 253, 254, 255, 256, 508, 509, 600]
    return [b"\x00", b"\x00" * 300, bytes([9]) * 508, random_body(rng, 600, zeros=0),
            body_with_crc_byte_zero(rng, 252, 1), body_with_crc_byte_zero(rng, 253, 0),
            body_with_crc_byte_zero(rng, 1, 0), body_with_crc_byte_zero(rng, 252, 0),
            *(random_body(rng, n) for n in edges), *(random_body(rng, n, zeros=0) for n in edges),
            *(random_body(rng, int(n), zeros=0.3) for n in rng.integers(1, top + 1, 6))]


def test_sender_emits_pack_frame_under_back_pressure_and_resends():
    rng = np.random.default_rng(3)
    bodies = sender_bodies(rng, 600)
    jobs = [*bodies[:3], None, *bodies[3:], None, None]
    frames = run_sender(MAX_BODY, jobs, seed=4)
    expected_frames, previous = [], b""
    for job in jobs:
        previous = previous if job is None else job
        expected_frames.append(pack_frame(previous))
    assert len(frames) == len(expected_frames)
    for got, want in zip(frames, expected_frames, strict=True):
        assert got == want


def test_sender_at_a_small_max_body():
    rng = np.random.default_rng(5)
    max_body = 300
    bodies = [random_body(rng, max_body), random_body(rng, max_body, zeros=0), bytes(max_body), b"\x07",
              random_body(rng, 254, zeros=0)]
    assert run_sender(max_body, bodies, seed=6) == [pack_frame(body) for body in bodies]


def test_sender_areas_keep_each_other_and_start_with_their_contents():
    """A frame sent from an extra area leaves the main one (and its resend) alone; an extra area sends its
    initial contents until written; each area starts at an aligned base, so base | offset addresses it."""
    rng = np.random.default_rng(9)
    max_body = 300
    template = bytes(3) + random_body(rng, 40, zeros=0.2)
    dut = FrameSender(max_body, areas=(bytes(5), template))
    assert dut.bases == area_bases(max_body, [5, len(template)]) == (0, 304, 320)
    assert dut.depth == 320 + len(template) and len(dut.send.payload.area) == 2
    main, failed, header = random_body(rng, 260), random_body(rng, 5), random_body(rng, 3, zeros=0)
    # (area, bytes written at its start or None, length sent)
    jobs = [(0, main, len(main)), (1, failed, 5), (0, None, len(main)), (2, None, len(template)),
            (2, header, len(template)), (0, None, len(main)), (1, None, 5)]

    async def produce(ctx):
        for area, body, length in jobs:
            if body is not None:
                await write_buffer(ctx, dut, body, dut.bases[area])
            await request(ctx, dut, length, area)

    filled = header + template[3:]
    assert sent_frames(dut, produce, rng, p_ready=0.7) == [
        pack_frame(body) for body in (main, failed, main, template, filled, main, failed)]


def test_area_bases_are_aligned_and_checked():
    assert area_bases(1027, [5, 38]) == (0, 1032, 1088)
    assert area_bases(64, []) == (0,)
    assert area_bases(64, [1, 2, 3]) == (0, 64, 66, 68)
    for bad in (0, 65, 2.5):
        with pytest.raises(ValueError):
            area_bases(64, [bad])


# --- round trip -----------------------------------------------------------------------------------------

def test_round_trip_sender_to_receiver():
    rng = np.random.default_rng(8)
    max_body = 600
    bodies = [*(random_body(rng, int(n), zeros=float(z)) for n, z in zip(rng.integers(1, max_body + 1, 8),
                                                                          rng.choice([0, 0.1, 0.5], 8),
                                                                          strict=True)),
              bytes(254), bytes([3]) * 254]
    sender, receiver = FrameSender(max_body), FrameReceiver(max_body)
    stall = Signal()
    top = Module()
    top.submodules.sender, top.submodules.receiver = sender, receiver
    top.d.comb += [receiver.i.payload.eq(sender.o.payload), receiver.i.valid.eq(sender.o.valid & ~stall),
                   sender.o.ready.eq(receiver.i.ready & ~stall)]
    received: list[bytes] = []

    async def host(ctx):
        for body in bodies:
            await write_buffer(ctx, sender, body)
            await request(ctx, sender, len(body))

    async def line(ctx):  # the UART is slow: bytes pass now and then
        while True:
            ctx.set(stall, rng.random() < 0.5)
            await ctx.tick()

    async def device(ctx):
        while len(received) < len(bodies):
            while not ctx.get(receiver.packet.valid):
                await ctx.tick()
            packet = ctx.get(receiver.packet.payload)
            assert packet.status == FrameStatus.OK
            contents = bytearray()
            for address in range(packet.length):
                ctx.set(receiver.read_addr, address)
                await ctx.tick()
                contents.append(ctx.get(receiver.read_data))
            received.append(bytes(contents))
            ctx.set(receiver.packet.ready, 1)
            await ctx.tick()
            ctx.set(receiver.packet.ready, 0)
        assert ctx.get(receiver.frames) == len(bodies)

    sim = Simulator(top)
    sim.add_clock(1 / 12e6)
    sim.add_testbench(host)
    sim.add_testbench(line, background=True)
    sim.add_testbench(device)
    sim.run()
    assert received == bodies


@pytest.mark.parametrize("max_body", [0, -3, 2.5])
def test_bad_max_body_is_refused(max_body):
    with pytest.raises(ValueError):
        FrameReceiver(max_body)
    with pytest.raises(ValueError):
        FrameSender(max_body)


def test_wiring_of_the_ports():
    receiver, sender = FrameReceiver(64), FrameSender(64)
    assert receiver.packet.payload.shape().size == 7 + 2
    assert len(receiver.read_addr) == 7 and len(sender.write_addr) == 6 and len(sender.send.payload) == 7
    wiring.connect(Module(), sender.o, receiver.i)
