"""The device side of the UART frame format (docs/PROTOCOL.md, "Frames"; host reference
:mod:`poise.firmware.framing`): a frame is ``COBS(body ‖ crc_lo ‖ crc_hi) ‖ 0x00``.

:class:`FrameReceiver` decodes frames on the fly into a packet buffer, checks their CRC and reports each one
with a :class:`FrameStatus`; :class:`FrameSender` sends the body in its reply buffer as one frame.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
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
    bytes) while the CRC of all but the latest two decoded bytes is kept. A 0x00 ends the frame; an empty
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
        Saturating counts of the frames reported ``OK``; ``BAD_CRC`` or ``BAD_COBS``; ``TOO_LONG``.
    """

    def __init__(self, max_body: int = MAX_BODY) -> None:
        _check(max_body)
        self.max_body = max_body
        super().__init__({
            "i": In(stream.Signature(8)),
            "packet": Out(stream.Signature(packet_layout(max_body))),
            "read_addr": In(range(max_body + 2)), "read_data": Out(8),
            "frames": Out(COUNTER_BITS), "bad_frames": Out(COUNTER_BITS), "long_frames": Out(COUNTER_BITS),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        size, limit = self.max_body + 2, max_frame(self.max_body)
        m.submodules.buffer = buffer = Memory(shape=8, depth=size, init=[])
        write, read = buffer.write_port(), buffer.read_port()
        m.d.comb += [read.addr.eq(self.read_addr), self.read_data.eq(read.data)]
        m.submodules.crc = crc = Crc16()

        encoded = Signal(range(limit + 1))  # encoded bytes of the frame so far
        dropped = Signal()  # more than `limit` encoded bytes: ignore the rest of the frame
        remaining = Signal(8)  # data bytes left in the current COBS block; 0: the next byte is a code
        zero_pending = Signal()  # the current block's code was below 255: a 0x00 follows it unless it is last
        decoded = Signal(range(size + 1))  # decoded bytes stored in the buffer
        overflow = Signal()  # a decoded byte did not fit in the buffer
        last, before_last = Signal(8), Signal(8)  # the latest two decoded bytes, kept out of the CRC

        byte = self.i.payload
        take = Signal()
        m.d.comb += [self.i.ready.eq(~self.packet.valid), take.eq(self.i.valid & self.i.ready)]
        produce, produced = Signal(), Signal(8)  # a decoded byte this cycle

        def report(status: FrameStatus, length: object, counter: Signal) -> None:
            m.d.sync += [self.packet.valid.eq(1), self.packet.payload.status.eq(status),
                         self.packet.payload.length.eq(length), *_bump(counter)]

        with m.If(self.packet.ready):
            m.d.sync += self.packet.valid.eq(0)

        with m.If(take):
            with m.If(byte == DELIMITER):
                with m.If(encoded != 0):
                    with m.If(dropped):
                        report(FrameStatus.TOO_LONG, self.max_body, self.long_frames)
                    with m.Elif(remaining != 0):
                        report(FrameStatus.BAD_COBS, decoded, self.bad_frames)
                    with m.Elif(overflow):
                        report(FrameStatus.TOO_LONG, self.max_body, self.long_frames)
                    with m.Elif(decoded < 2):
                        report(FrameStatus.BAD_CRC, decoded, self.bad_frames)
                    with m.Elif(crc.crc != Cat(before_last, last)):
                        report(FrameStatus.BAD_CRC, decoded - 2, self.bad_frames)
                    with m.Else():
                        report(FrameStatus.OK, decoded - 2, self.frames)
                m.d.sync += [encoded.eq(0), dropped.eq(0), remaining.eq(0), zero_pending.eq(0), decoded.eq(0),
                             overflow.eq(0)]
                m.d.comb += crc.clear.eq(1)
            with m.Elif(dropped):
                pass
            with m.Elif(encoded == limit):
                m.d.sync += dropped.eq(1)
            with m.Else():
                m.d.sync += encoded.eq(encoded + 1)
                with m.If(remaining == 0):  # a code byte: the block's length, and the 0x00 ending the last one
                    m.d.sync += [remaining.eq(byte - 1), zero_pending.eq(byte != 0xFF)]
                    m.d.comb += [produce.eq(zero_pending), produced.eq(0)]
                with m.Else():
                    m.d.sync += remaining.eq(remaining - 1)
                    m.d.comb += [produce.eq(1), produced.eq(byte)]

        with m.If(produce):
            with m.If(decoded == size):
                m.d.sync += overflow.eq(1)
            with m.Else():
                m.d.comb += [write.addr.eq(decoded), write.data.eq(produced), write.en.eq(1),
                             crc.data.eq(before_last), crc.valid.eq(decoded >= 2)]
                m.d.sync += [decoded.eq(decoded + 1), last.eq(produced), before_last.eq(last)]
        return m


class FrameSender(wiring.Component):
    """Sends the first ``length`` bytes of its reply buffer as the frame
    :func:`~poise.firmware.framing.pack_frame` makes of them.

    The consumer fills the buffer through ``write_addr``/``write_data``/``write_enable`` (one byte per cycle)
    while ``busy`` is low, then gives the body length on ``send`` (taken only while idle). The sender then
    computes the CRC of ``buffer[0:length]`` (one byte per cycle) and emits on ``o`` the COBS encoding of
    ``body ‖ crc_lo ‖ crc_hi`` and a 0x00, honouring ``o.ready``: for each COBS block it scans ahead for the
    next 0x00 (at most 254 bytes, one per cycle), emits the code byte, then re-reads and emits the block
    (at most one byte every two cycles). ``busy`` is high from taking ``send`` until the delimiter is taken.
    The buffer is kept, so the same ``send`` again resends the same frame.

    Members
    -------
    write_addr : ``In(range(max_body))``, write_data : ``In(8)``, write_enable : ``In(1)``
        The buffer's write port. Do not write while ``busy``.
    send : ``In(stream.Signature(range(max_body + 1)))``
        The body length to send (at least 1).
    o : ``Out(stream.Signature(8))``
        The frame's bytes, to the UART transmitter.
    busy : ``Out(1)``
        Sending.
    """

    def __init__(self, max_body: int = MAX_BODY) -> None:
        _check(max_body)
        self.max_body = max_body
        super().__init__({
            "write_addr": In(range(max_body)), "write_data": In(8), "write_enable": In(1),
            "send": In(stream.Signature(range(max_body + 1))),
            "o": Out(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        size = self.max_body + 2  # the longest packet: body and CRC
        m.submodules.buffer = buffer = Memory(shape=8, depth=self.max_body, init=[])
        write, read = buffer.write_port(), buffer.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data), write.en.eq(self.write_enable)]
        m.submodules.crc = crc = Crc16()

        length = Signal(range(self.max_body + 1))
        end = Signal(range(size + 1))  # the packet's length: body and CRC
        pos = Signal(range(size + 2))  # the packet position being read
        pos_q = Signal.like(pos)  # the position whose byte is `current`
        current = Signal(8)  # the packet's byte at `pos_q` (the body from the buffer, then the CRC)
        m.d.comb += [read.addr.eq(Mux(pos < self.max_body, pos, 0)), end.eq(length + 2),
                     current.eq(Mux(pos_q < length, read.data, Mux(pos_q == length, crc.crc[:8], crc.crc[8:])))]
        m.d.sync += pos_q.eq(pos)

        start = Signal(range(size + 1))  # the current block's first packet position
        run = Signal(range(FULL_RUN + 1))  # the current block's non-zero bytes
        left = Signal(range(FULL_RUN + 1))  # of those, still to emit
        primed = Signal()  # `current` holds the byte at a position scanned or fed to the CRC
        stop_zero, stop_full = Signal(), Signal()  # the block ended at a 0x00, or at 254 bytes

        m.d.comb += self.busy.eq(1)
        with m.FSM(name="sender"):
            with m.State("IDLE"):
                m.d.comb += [self.busy.eq(0), self.send.ready.eq(1)]
                with m.If(self.send.valid):
                    m.d.comb += crc.clear.eq(1)
                    m.d.sync += [length.eq(self.send.payload), pos.eq(0), primed.eq(0)]
                    m.next = "CRC"
            with m.State("CRC"):  # read the body once, one byte per cycle, into the CRC
                m.d.comb += [crc.data.eq(read.data), crc.valid.eq(primed)]
                with m.If(pos < length):
                    m.d.sync += [pos.eq(pos + 1), primed.eq(1)]
                with m.Else():
                    m.d.sync += primed.eq(0)
                    with m.If(~primed):
                        m.d.sync += [start.eq(0), pos.eq(0), run.eq(0)]
                        m.next = "SCAN"
            with m.State("SCAN"):  # count the block's non-zero bytes from `start`
                m.d.sync += [pos.eq(pos + 1), primed.eq(1)]
                with m.If(primed):
                    with m.If(pos_q == end):
                        m.d.sync += [stop_zero.eq(0), stop_full.eq(0), pos.eq(start)]
                        m.next = "CODE"
                    with m.Elif(current == 0):
                        m.d.sync += [stop_zero.eq(1), stop_full.eq(0), pos.eq(start)]
                        m.next = "CODE"
                    with m.Else():
                        m.d.sync += run.eq(run + 1)
                        with m.If(run == FULL_RUN - 1):
                            m.d.sync += [stop_zero.eq(0), stop_full.eq(1), pos.eq(start)]
                            m.next = "CODE"
            with m.State("CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(run + 1)]
                with m.If(self.o.ready):
                    m.d.sync += left.eq(run)
                    m.next = "FETCH"
                    with m.If(run == 0):
                        m.next = "NEXT"
            with m.State("FETCH"):  # the read of `pos` arrives next cycle
                m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(current)]
                with m.If(self.o.ready):
                    m.d.sync += [pos.eq(pos + 1), left.eq(left - 1)]
                    m.next = "FETCH"
                    with m.If(left == 1):
                        m.next = "NEXT"
            with m.State("NEXT"):  # after the block: its 0x00, the next block, or the end
                following = Signal.like(start)
                m.d.comb += following.eq(start + run + stop_zero)
                m.d.sync += [start.eq(following), pos.eq(following), run.eq(0), primed.eq(0)]
                m.next = "SCAN"
                with m.If(~stop_zero & (~stop_full | (following == end))):
                    m.next = "DELIMITER"
            with m.State("DELIMITER"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(DELIMITER)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
