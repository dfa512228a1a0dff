"""The device side of the UART frame format (docs/PROTOCOL.md, "Frames"; host reference
:mod:`poise.firmware.framing`): a frame is ``COBS(body ‖ crc_lo ‖ crc_hi) ‖ 0x00``.

:class:`FrameReceiver` decodes frames on the fly into a packet buffer, checks their CRC and reports each one
with a :class:`FrameStatus`; :class:`FrameSender` sends a body from an area of its reply buffer as one frame.

Both buffers are block RAMs read asynchronously into a register of their own and marked ``no_rw_check``:
Yosys then adds no logic for a read and a write of one address in one cycle, which neither ever needs (the
receiver writes nothing while a packet is held, the sender is written only while idle).
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Array, Cat, Module, Mux, ShapeCastable, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from poise.firmware.framing import DELIMITER, MAX_BODY, max_frame
from poise.rtl.crc import Crc16

COUNTER_BITS = 16
FULL_RUN = 254
"""The longest COBS block: code 255, 254 non-zero bytes, no zero implied after it."""


class FrameStatus(enum.Enum, shape=2):
    """How a received frame was judged (the same decision as :func:`poise.firmware.framing.unpack_frame`)."""

    OK = 0
    BAD_CRC = 1
    BAD_COBS = 2
    TOO_LONG = 3


def packet_layout(max_body: int) -> data.StructLayout:
    """The payload of :attr:`FrameReceiver.packet`."""
    return data.StructLayout({"length": range(max_body + 3), "status": FrameStatus})


def _check(max_body: int) -> None:
    if not isinstance(max_body, int) or max_body < 1:
        raise ValueError(f"max_body must be a positive int, not {max_body!r}")


def _bump(counter: Signal) -> list:
    """Count one more, saturating at the counter's width."""
    return [counter.eq(counter + (counter != (1 << len(counter)) - 1))]


class FrameReceiver(wiring.Component):
    """Decodes the frames arriving on ``i`` into a packet buffer and reports each one on ``packet``.

    Each byte is COBS-decoded as it arrives into the buffer (``max_body + 2`` bytes: body, then the two CRC
    bytes; the block RAM holds the first ``max_body``, the last two are the latest two decoded bytes, kept in
    registers) while the CRC of all but the latest two decoded bytes is kept. A 0x00 ends the frame; an empty
    frame (two 0x00 in a row) is ignored. Any other frame is reported with the first matching status, in
    the order :func:`~poise.firmware.framing.unpack_frame` checks:

    1. ``TOO_LONG``, ``length = max_body``: more than :func:`max_frame` encoded bytes (the host's
       ``MAX_FRAME`` for ``max_body == MAX_BODY``); the bytes past that limit are dropped unseen.
    2. ``BAD_COBS``, ``length`` = the bytes decoded: a code byte pointed past the end (a truncated frame).
    3. ``TOO_LONG``, ``length = max_body``: it decodes to more than ``max_body + 2`` bytes (only the first
       ``max_body + 2`` are stored). The host's ``unpack_frame`` has no such check: it would accept such a
       body (longer than ``pack_frame`` allows) or call it a bad CRC.
    4. ``BAD_CRC``: fewer than 2 decoded bytes (``length`` = those) or a CRC mismatch (``length`` = the
       decoded bytes without the last two).
    5. ``OK``: ``length`` is the body's, and the buffer holds the body (then the CRC).

    For ``max_body < MAX_BODY`` rules 1 and 3 refuse, as ``TOO_LONG``, frames the host would judge on.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes from the UART receiver. ``i.ready`` is low while ``packet.valid`` is high, otherwise high
        (one byte per cycle).
    packet : ``Out(stream.Signature(packet_layout(max_body)))``
        ``{length, status}`` of the frame just ended. While it is valid, the buffer holds that frame for the
        consumer; taking it (``packet.ready``) releases the buffer, so take it after reading.
    read_addr : ``In(range(max_body + 2))``, read_data : ``Out(8)``
        The buffer's read port: ``read_data`` is the byte at the ``read_addr`` of the previous cycle.
    frames, bad_frames, long_frames : ``Out(16)``
        Saturating counts of the frames reported ``OK``; ``BAD_CRC`` or ``BAD_COBS``; ``TOO_LONG``. Only with
        ``counters`` (the default): a consumer that counts what it takes leaves them out.
    """

    def __init__(self, max_body: int = MAX_BODY, counters: bool = True) -> None:
        _check(max_body)
        self.max_body, self.counters = max_body, counters
        super().__init__({
            "i": In(stream.Signature(8)),
            "packet": Out(stream.Signature(packet_layout(max_body))),
            "read_addr": In(range(max_body + 2)), "read_data": Out(8),
            **({name: Out(COUNTER_BITS) for name in ("frames", "bad_frames", "long_frames")} if counters else {}),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        size, limit = self.max_body + 2, max_frame(self.max_body)
        # The block RAM holds the first max_body bytes; the two after them (a CRC, or a cut frame's last data)
        # are the latest two decoded, `last` and `before_last` (a 2048-byte body takes 4 iCE40 block RAMs, not 5).
        m.submodules.buffer = buffer = Memory(shape=8, depth=self.max_body, init=[], attrs={"no_rw_check": 1})
        write, read = buffer.write_port(), buffer.read_port(domain="comb")
        m.submodules.crc = crc = Crc16()

        encoded = Signal(range(limit + 1))  # encoded bytes of the frame so far
        dropped = Signal()  # more than `limit` encoded bytes: ignore the rest of the frame
        remaining = Signal(8)  # data bytes left in the current COBS block; 0: the next byte is a code
        zero_pending = Signal()  # the current block's code was below 255: a 0x00 follows it unless it is last
        decoded = Signal(range(size + 1))  # decoded bytes stored in the buffer
        overflow = Signal()  # a decoded byte did not fit in the buffer
        last, before_last = Signal(8), Signal(8)  # the latest two decoded bytes, kept out of the CRC
        stored, beyond, latest = Signal(8), Signal(), Signal()  # of the address read last cycle
        m.d.comb += [read.addr.eq(self.read_addr),
                     self.read_data.eq(Mux(beyond, Mux(latest, last, before_last), stored))]
        # Only a BAD_COBS packet is longer than max_body, and its length is the count of decoded bytes.
        m.d.sync += [stored.eq(read.data), beyond.eq(self.read_addr >= self.max_body),
                     latest.eq(self.read_addr[0] ^ self.packet.payload.length[0])]

        byte = self.i.payload
        take = Signal()
        m.d.comb += [self.i.ready.eq(~self.packet.valid), take.eq(self.i.valid & self.i.ready)]
        produce, produced = Signal(), Signal(8)  # a decoded byte this cycle

        with m.If(self.packet.ready):
            m.d.sync += self.packet.valid.eq(0)

        # The judgement of a frame at its delimiter (one length: a constant or `decoded` less the CRC's 2).
        status, short = Signal(FrameStatus), Signal()
        m.d.comb += short.eq(decoded < 2)
        with m.If(dropped):
            m.d.comb += status.eq(FrameStatus.TOO_LONG)
        with m.Elif(remaining != 0):
            m.d.comb += status.eq(FrameStatus.BAD_COBS)
        with m.Elif(overflow):
            m.d.comb += status.eq(FrameStatus.TOO_LONG)
        with m.Elif(short | (crc.crc != Cat(before_last, last))):
            m.d.comb += status.eq(FrameStatus.BAD_CRC)
        with m.Else():
            m.d.comb += status.eq(FrameStatus.OK)
        trimmed = decoded - Mux((remaining == 0) & ~short, 2, 0)
        length = Mux(status == FrameStatus.TOO_LONG, self.max_body, trimmed)

        with m.If(take):
            with m.If(byte == DELIMITER):
                with m.If(encoded != 0):
                    m.d.sync += [self.packet.valid.eq(1), self.packet.payload.status.eq(status),
                                 self.packet.payload.length.eq(length)]
                    if self.counters:
                        with m.Switch(status):
                            with m.Case(FrameStatus.OK):
                                m.d.sync += _bump(self.frames)
                            with m.Case(FrameStatus.TOO_LONG):
                                m.d.sync += _bump(self.long_frames)
                            with m.Default():
                                m.d.sync += _bump(self.bad_frames)
                m.d.sync += [encoded.eq(0), dropped.eq(0), remaining.eq(0), zero_pending.eq(0), decoded.eq(0),
                             overflow.eq(0)]
                m.d.comb += crc.clear.eq(1)
            with m.Elif(dropped):
                pass
            with m.Elif(encoded == limit):
                m.d.sync += dropped.eq(1)
            with m.Else():
                m.d.sync += [encoded.eq(encoded + 1), remaining.eq(Mux(remaining == 0, byte, remaining) - 1)]
                with m.If(remaining == 0):  # a code byte: the block's length, and the 0x00 ending the last one
                    m.d.sync += zero_pending.eq(byte != 0xFF)
                    m.d.comb += [produce.eq(zero_pending), produced.eq(0)]
                with m.Else():
                    m.d.comb += [produce.eq(1), produced.eq(byte)]

        with m.If(produce):
            with m.If(decoded == size):
                m.d.sync += overflow.eq(1)
            with m.Else():
                m.d.comb += [write.addr.eq(decoded), write.data.eq(produced), write.en.eq(decoded < self.max_body),
                             crc.data.eq(before_last), crc.valid.eq(decoded >= 2)]
                m.d.sync += [decoded.eq(decoded + 1), last.eq(produced), before_last.eq(last)]
        return m


def area_bases(max_body: int, sizes: Sequence[int]) -> tuple[int, ...]:
    """The base addresses of a :class:`FrameSender`'s buffer areas: the main one (``max_body`` bytes) at 0,
    then one per entry of ``sizes``, each at the next multiple of its size rounded up to a power of two,
    so that ``base | offset`` addresses it (one OR gate per set bit of the base, no adder)."""
    bases, end = [0], max_body
    for size in sizes:
        if not isinstance(size, int) or not 1 <= size <= max_body:
            raise ValueError(f"an extra area holds 1 to max_body = {max_body} bytes, not {size!r}")
        align = 1 << (size - 1).bit_length()
        bases.append(-(-end // align) * align)
        end = bases[-1] + size
    return tuple(bases)


class FrameSender(wiring.Component):
    """Sends the first ``length`` bytes of an area of its buffer as the frame
    :func:`~poise.firmware.framing.pack_frame` makes of them.

    The buffer has a main area of ``max_body`` bytes at address 0 and one extra area per entry of ``areas``
    (at :attr:`bases`, see :func:`area_bases`), which starts out holding that entry's bytes: a frame sent
    from one area leaves the others, and so a later resend from them, untouched.

    The consumer fills an area through ``write_addr``/``write_data``/``write_enable`` (one byte per cycle)
    while ``busy`` is low, then gives the body length (and the area) on ``send`` (taken only while idle).
    The sender then emits on ``o`` the COBS encoding of ``body ‖ crc_lo ‖ crc_hi`` (the area's first
    ``length`` bytes and their CRC) and a 0x00, honouring ``o.ready``: for each COBS block it scans ahead
    for the next 0x00 (at most 254 bytes, one per cycle), emits the code byte, then re-reads and emits the
    block (at most one byte every two cycles). The scans read each byte once, in order, so they compute the
    CRC, complete when they reach it. ``busy`` is high from taking ``send`` until the delimiter is taken.
    The buffer is kept, so the same ``send`` again resends the same frame.

    Members
    -------
    write_addr : ``In(range(depth))``, write_data : ``In(8)``, write_enable : ``In(1)``
        The buffer's write port: area ``k``'s byte ``i`` is at ``bases[k] + i``. Do not write while ``busy``.
    send : ``In(stream.Signature(range(max_body + 1)))``
        The body length to send (at least 1, at most the area's size); with extra areas a struct
        ``{length, area}`` (:meth:`send_layout`).
    o : ``Out(stream.Signature(8))``
        The frame's bytes, to the UART transmitter.
    busy : ``Out(1)``
        Sending.
    """

    def __init__(self, max_body: int = MAX_BODY, areas: Sequence[bytes] = ()) -> None:
        _check(max_body)
        self.max_body, self.areas = max_body, tuple(bytes(area) for area in areas)
        self.bases = area_bases(max_body, [len(area) for area in self.areas])
        self.depth = self.bases[-1] + (len(self.areas[-1]) if self.areas else max_body)
        super().__init__({
            "write_addr": In(range(self.depth)), "write_data": In(8), "write_enable": In(1),
            "send": In(stream.Signature(self.send_layout(max_body, len(self.areas)))),
            "o": Out(stream.Signature(8)),
            "busy": Out(1),
        })

    @staticmethod
    def send_layout(max_body: int, extra: int) -> ShapeCastable:
        """The payload of :attr:`send`: the body length, with ``extra`` areas also the area's number."""
        length = range(max_body + 1)
        return data.StructLayout({"length": length, "area": range(extra + 1)}) if extra else length

    def elaborate(self, platform: object) -> Module:
        m = Module()
        init = bytearray(self.depth)
        for base, area in zip(self.bases[1:], self.areas, strict=True):
            init[base:base + len(area)] = area
        m.submodules.buffer = buffer = Memory(shape=8, depth=self.depth, init=list(init), attrs={"no_rw_check": 1})
        write, read = buffer.write_port(), buffer.read_port(domain="comb")
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data), write.en.eq(self.write_enable)]
        read_data = Signal(8)  # the byte at the address of the previous cycle
        m.d.sync += read_data.eq(read.data)
        m.submodules.crc = crc = Crc16()

        if self.areas:
            length_in, area_in = self.send.payload.length, self.send.payload.area
        else:
            length_in, area_in = self.send.payload, 0
        length = Signal(range(self.max_body + 1))
        area = Signal(range(len(self.areas) + 1))  # the area being sent
        pos = Signal(range(self.max_body + 4))  # the packet position being read
        start = Signal(range(self.max_body + 3))  # the current block's first packet position
        code = Signal(8)  # the current block's code: 1 + its non-zero bytes (counted down as they go out)
        code_down = Signal()  # DATA counts `code` down (SCAN up): one adder for both
        primed = Signal()  # `current` holds the byte of the position read last cycle

        stop_zero, stop_full = Signal(), Signal()  # the block ended at a 0x00, or at 254 bytes
        m.d.comb += read.addr.eq(Array(self.bases)[area] | pos)

        # Where `pos` stands against the body: one subtraction instead of a comparator per question.
        offset = Signal(signed(len(pos) + 1))
        m.d.comb += offset.eq(pos - length)
        in_body, at_end = offset < 0, offset == 2  # the body, the end of the packet (after the CRC)
        body_q, crc_low_q, end_q = Signal(), Signal(), Signal()  # the same of the position read last cycle
        m.d.sync += [body_q.eq(in_body), crc_low_q.eq(offset == 0), end_q.eq(at_end)]
        current = Signal(8)  # the packet's byte read last cycle (the body from the buffer, then the CRC)
        m.d.comb += current.eq(Mux(body_q, read_data, Mux(crc_low_q, crc.crc[:8], crc.crc[8:])))
        following = Signal.like(pos)
        m.d.comb += following.eq(pos + 1)
        counted = Signal(8)
        m.d.comb += counted.eq(code + Mux(code_down, 0xFF, 1))

        m.d.comb += self.busy.eq(1)
        with m.FSM(name="sender"):
            with m.State("IDLE"):
                m.d.comb += [self.busy.eq(0), self.send.ready.eq(1)]
                with m.If(self.send.valid):
                    m.d.comb += crc.clear.eq(1)
                    m.d.sync += [length.eq(length_in), area.eq(area_in), pos.eq(0), start.eq(0), code.eq(1),
                                 primed.eq(0)]
                    m.next = "SCAN"
            # Count the block's non-zero bytes from `start`. The scans read every byte of the packet once, in
            # order: the body's go into the CRC, which is complete when the scan reaches the CRC's bytes.
            with m.State("SCAN"):
                m.d.sync += [pos.eq(following), primed.eq(1)]
                m.d.comb += [crc.data.eq(read_data), crc.valid.eq(primed & body_q)]
                with m.If(primed):
                    with m.If(end_q):
                        m.d.sync += [stop_zero.eq(0), stop_full.eq(0), pos.eq(start)]
                        m.next = "CODE"
                    with m.Elif(current == 0):
                        m.d.sync += [stop_zero.eq(1), stop_full.eq(0), pos.eq(start)]
                        m.next = "CODE"
                    with m.Else():
                        m.d.sync += code.eq(counted)
                        with m.If(code == FULL_RUN):
                            m.d.sync += [stop_zero.eq(0), stop_full.eq(1), pos.eq(start)]
                            m.next = "CODE"
            with m.State("CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(code)]
                with m.If(self.o.ready):
                    m.next = "FETCH"
                    with m.If(code == 1):
                        m.next = "NEXT"
            with m.State("FETCH"):  # the read of `pos` arrives next cycle
                m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(current)]
                with m.If(self.o.ready):
                    m.d.comb += code_down.eq(1)
                    m.d.sync += [pos.eq(following), code.eq(counted)]
                    m.next = "FETCH"
                    with m.If(code == 2):
                        m.next = "NEXT"
            with m.State("NEXT"):  # after the block (`pos` just past it): its 0x00, the next block, or the end
                m.d.sync += [start.eq(pos), primed.eq(0), code.eq(1)]
                with m.If(stop_zero):
                    m.d.sync += [start.eq(following), pos.eq(following)]
                m.next = "SCAN"
                with m.If(~stop_zero & (~stop_full | at_end)):
                    m.next = "DELIMITER"
            with m.State("DELIMITER"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(DELIMITER)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
