"""The command controller: UART bytes in, UART bytes out, the network core in between — docs/PROTOCOL.md in
gateware, byte for byte the reference device :class:`poise.firmware.reference.ReferenceDevice` (except the
cycle counts, which only the gateware knows).

Frames come in through a :class:`~poise.rtl.frame.FrameReceiver`, which holds each packet in its buffer until
the controller lets it go; the controller counts the failed and the short ones itself as it takes them.
Replies are written into an area of one :class:`~poise.rtl.frame.FrameSender`'s buffer and sent from there;
the buffer is kept, so a repeated request (same sequence number and opcode) is answered by sending the
stored reply again. Three areas: the main one for the stored replies; a small one for the error replies to
failed frames, so they never disturb the stored reply; and one that holds the INFO reply's constant payload
from the start (an INFO writes only its header there). Every request is checked completely before it has any
effect: a LOAD_WEIGHTS with one bad value writes nothing, an image that does not decode never reaches the
core, a READ_WEIGHTS run leaving the matrix is refused before its reply goes out (it is checked as it is
read).
"""

from __future__ import annotations

import enum

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from poise.errors import PoiseError
from poise.firmware.framing import MAX_BODY
from poise.firmware.messages import (
    ACCESS,
    INFER_HEAD,
    INFO_HEAD,
    MAX_READ,
    READ,
    SETTING,
    TRAIN_HEAD,
    WIRE_BITS,
    Encoding,
    Parameter,
    Target,
)
from poise.firmware.protocol import HEADER, PROTOCOL_VERSION, REPLY, ErrorCode, Opcode
from poise.golden.integer import MAX_LR_SHIFT
from poise.rtl.core import command_layout, parameter_request_layout, parameter_response_layout, result_layout
from poise.rtl.frame import FrameReceiver, FrameSender, FrameStatus
from poise.rtl.geometry import CoreGeometry

COUNTER_BITS = 16
REPLY_BODY = HEADER.size + 2 * MAX_READ
"""The largest reply: a header and MAX_READ int16 values."""
ERROR_BODY = HEADER.size + 2
"""An error reply: the header, the error code and the opcode answered."""
FIELDS = HEADER.size + READ.size
"""The bytes of a request read before its checks, whatever the opcode: the header and the longest fixed
fields (READ_WEIGHTS'); those past the packet's end are not used."""


NEEDS = {
    Opcode.INFO: (HEADER.size, True), Opcode.STATUS: (HEADER.size, True), Opcode.RESET: (HEADER.size, True),
    Opcode.SET: (HEADER.size + SETTING.size, True), Opcode.READ_WEIGHTS: (HEADER.size + READ.size, True),
    Opcode.LOAD_WEIGHTS: (HEADER.size + ACCESS.size + 2, False),  # and a whole number of values
    Opcode.INFER: (HEADER.size + INFER_HEAD.size, False), Opcode.TRAIN: (HEADER.size + TRAIN_HEAD.size, False),
}
"""The requests: the packet length each needs, and whether exactly that (else at least that)."""


class Reply(enum.IntEnum):

    """Which reply the emitter writes: each is a header and a fixed layout of fields."""

    ERROR = 0
    HEADER = 1
    INFO = 2
    STATUS = 3
    RESULT = 4
    SETTING = 5
    LOADED = 6


class Area(enum.IntEnum):
    """The sender's buffer areas (:class:`~poise.rtl.frame.FrameSender`): where a reply is written."""

    MAIN = 0
    FAILED = 1
    """The error replies to failed frames (rule 1): sent once, never stored."""
    INFO = 2
    """The INFO reply: its payload is there from the start."""


def _le(value: Value, width: int) -> Value:
    """``value`` as exactly ``width`` bits, sign- or zero-extended: a little-endian field of the reply."""
    value = Value.cast(value)
    if len(value) >= width:
        return value[:width]
    fill = value[-1] if value.shape().signed else Const(0, 1)
    return Cat(value, fill.replicate(width - len(value)))


def _fits(value: Value, width: int) -> Value:
    """Whether the signed ``value`` is within ``width`` bits: every bit above them equals the sign bit."""
    top = Value.cast(value)[width - 1:]
    return (top == 0) | (top == (1 << len(top)) - 1)


def _below(value: Value, limit: Value, bits: int) -> Value:
    """``value < limit`` for a ``limit`` below ``2 ** bits``: a ``bits``-wide comparison and a zero test."""
    value = Value.cast(value)
    return (value[bits:] == 0) & (value[:bits] < limit)


def _reply_mux(m: Module, kind: Value, index: Value, replies: dict[int, list[Value]]) -> Signal:
    """The byte ``index`` of reply ``kind`` (each a list of byte values): per position, the values the
    replies have there (each once, the replies without one there do not care), then the position: fewer
    LUTs than a multiplexer per reply, as the replies share their header and many positions."""
    width = max(len(values) for values in replies.values())
    positions = []
    for position in range(width):
        sources: dict[str, tuple[Value, list[int]]] = {}
        for reply, values in replies.items():
            if position < len(values):
                sources.setdefault(repr(values[position]), (values[position], []))[1].append(reply)
        *others, (selected, _) = sources.values()
        for source, kinds in reversed(others):
            selected = Mux(Cat(*(kind == k for k in kinds)).any(), source, selected)
        byte = Signal(8, name=f"reply_byte{position}")
        m.d.comb += byte.eq(selected)
        positions.append(byte)
    positions += positions[-1:] * ((1 << (width - 1).bit_length()) - width)
    return Cat(*positions).word_select(index[:(width - 1).bit_length()], 8)


class CommandController(wiring.Component):
    """Answers every request on ``rx`` with one reply on ``tx``, driving the core through its ports.

    Members
    -------
    rx, tx : byte streams to and from the UART.
    command, pixels, result, parameter_request, parameter_response : the core's ports, flipped.
    core_reset : ``Out(1)``, one cycle on RESET: the core's registers and LFSR, not its memories.
    framing_errors, parity_errors, overruns : ``In(16)``, the UART receiver's counters (reported by STATUS).
    busy : ``Out(1)``, a request is being handled or a reply sent. error : ``Out(1)``, one cycle per error reply.
    """

    def __init__(self, geometry: CoreGeometry, info: bytes, max_body: int = MAX_BODY) -> None:
        fixed = geometry.fixed
        if max(fixed.state.width, fixed.weight.width, fixed.bias.width) > WIRE_BITS:
            raise PoiseError("the protocol carries states, weights and biases as int16; this spec is wider")
        if info[INFO_HEAD.size - 1] != len(geometry.layers):
            raise PoiseError("the INFO payload does not describe this network")
        self.geometry, self.info, self.max_body = geometry, info, max_body
        self.receiver = FrameReceiver(max_body, counters=False)
        self.sender = FrameSender(REPLY_BODY, areas=(bytes(ERROR_BODY), bytes(HEADER.size) + info))
        super().__init__({
            "rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
            "command": Out(stream.Signature(command_layout(geometry))),
            "pixels": Out(stream.Signature(8)),
            "result": In(stream.Signature(result_layout(geometry))),
            "parameter_request": Out(stream.Signature(parameter_request_layout(geometry))),
            "parameter_response": In(stream.Signature(parameter_response_layout(geometry))),
            "core_reset": Out(1),
            "framing_errors": In(COUNTER_BITS), "parity_errors": In(COUNTER_BITS), "overruns": In(COUNTER_BITS),
            "busy": Out(1), "error": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        geometry, fixed = self.geometry, self.geometry.fixed
        layers, matrices = geometry.layers, geometry.matrices
        n_in, n_out = layers[0], layers[-1]
        m.submodules.receiver = receiver = self.receiver
        m.submodules.sender = sender = self.sender
        wiring.connect(m, wiring.flipped(self.rx), receiver.i)
        wiring.connect(m, sender.o, wiring.flipped(self.tx))

        # -- registers ---------------------------------------------------------------------------------------
        size_bits = max(layers).bit_length()  # rows, columns and positions in a matrix are below 2 ** size_bits
        # The packet's status and length, read while it is held (every use is before it is let go).
        status, length = receiver.packet.payload.status, receiver.packet.payload.length
        last_sequence, last_opcode, last_valid = Signal(8), Signal(8), Signal()
        last_length, last_area = Signal(range(REPLY_BODY + 1)), Signal(Area)
        fields = Signal(8 * FIELDS)  # the header and the fixed fields after it, little endian, as received
        position = Signal(range(self.max_body + 3))  # buffer address of the next byte to read
        code = Signal(range(max(ErrorCode) + 1))  # error code of an error reply
        learn = Signal(init=1)
        lr_shift = Signal(range(MAX_LR_SHIFT + 1))
        images = Signal(32)
        refused, bad_frames, long_frames = Signal(COUNTER_BITS), Signal(COUNTER_BITS), Signal(COUNTER_BITS)
        run = Signal(8)  # zero pixels still to come
        dry = Signal()  # checking a PACKED image or a LOAD's values: nothing goes out yet
        count = Signal(range(max(MAX_READ, self.max_body // 2, n_in) + 1))  # values checked or read; pixels
        row, col = Signal(range(max(layers) + 1)), Signal(range(max(layers) + 1))
        low = Signal(8)  # LOAD: a value's low byte; READ: a value's high byte
        reply_kind = Signal(Reply)
        area = Signal(Area)
        read_after = Signal()  # the reply written is READ_WEIGHTS' header: its values follow
        write_address = Signal(range(REPLY_BODY + 1))

        m.d.comb += receiver.read_addr.eq(position)  # 0 while waiting for a packet
        byte = receiver.read_data

        def bump(counter: Signal) -> list:
            """Count one more, saturating: the increment's carry out says the counter is full."""
            counted = counter + 1
            return [counter.eq(Mux(counted[-1], counter, counted))]

        # -- request fields ------------------------------------------------------------------------------------
        version, sequence, opcode, *arg = (fields.word_select(k, 8) for k in range(FIELDS))
        target, layer = arg[0], arg[1]
        arg_row, arg_col = Cat(arg[2], arg[3]), Cat(arg[4], arg[5])
        read_count = Cat(arg[6], arg[7])
        label, flags = arg[0], arg[1]
        raw, packed = (Mux(opcode == Opcode.TRAIN, arg[2] == kind, arg[0] == kind)
                       for kind in (Encoding.RAW, Encoding.PACKED))  # the image's encoding
        setting_value = Cat(arg[2], arg[3], arg[4], arg[5])
        layer_index = layer[:max(matrices - 1, 1).bit_length()]
        rows = Array(Const(n, size_bits) for n in layers[:-1])[layer_index]
        cols = Array(Const(n, size_bits) for n in layers[1:])[layer_index]
        is_bias = target == Target.BIASES
        row_limit = Mux(is_bias, 1, rows)
        # The packet length the request needs (exactly, or at least): one equality and one comparison.
        needed = Signal.like(length)
        exact = Signal()
        with m.Switch(opcode):
            for request, (least, is_exact) in NEEDS.items():
                with m.Case(request):
                    m.d.comb += [needed.eq(least), exact.eq(is_exact)]
        bad_length = (Mux(exact, length != needed, length < needed)
                      | ((opcode == Opcode.LOAD_WEIGHTS) & (length[0] != (HEADER.size + ACCESS.size) % 2)))
        loaded_value = Cat(low, byte)  # LOAD: the value whose high byte is at `position`
        in_format = Mux(is_bias, _fits(loaded_value, fixed.bias.width), _fits(loaded_value, fixed.weight.width))
        access_ok = ((target[1:] == 0) & (layer < matrices) & _below(arg_row, row_limit, size_bits)
                     & _below(arg_col, cols, size_bits))
        next_count = Signal.like(count)
        m.d.comb += next_count.eq(count + 1)
        count_bits = MAX_READ.bit_length()  # READ: the value at (row, col) is the last (read_count ≤ MAX_READ)
        read_done = next_count[:count_bits] == read_count[:count_bits]
        load_done = position == length  # LOAD: the value just read is the last

        def step_position() -> list:
            """The next (row, col) of a row-major run."""
            wrap = col == cols - 1
            return [col.eq(Mux(wrap, 0, col + 1)), row.eq(row + wrap)]

        # -- reply words: header, then the reply's fields, little endian --------------------------------------
        result = self.result.payload
        reply_opcode = Mux(reply_kind == Reply.ERROR, Opcode.ERROR, opcode | REPLY)
        header = Cat(Const(PROTOCOL_VERSION, 8), sequence, reply_opcode[:8])
        status_counters = Cat(self.framing_errors, self.parity_errors, self.overruns, bad_frames, long_frames,
                              refused, images, Cat(learn, Const(0, 7)))
        outputs = Cat(*(_le(result.outputs[k], 16) for k in range(n_out)))
        words = {
            Reply.ERROR: Cat(header, _le(code, 8), opcode),
            Reply.HEADER: header,
            Reply.INFO: header,  # the payload is in the INFO area already
            Reply.STATUS: Cat(header, status_counters),
            Reply.RESULT: Cat(header, _le(result.prediction, 8), result.spikes, result.synops, result.cycles,
                              result.synapse_cycles, outputs),
            Reply.SETTING: Cat(header, *arg[:SETTING.size]),
            Reply.LOADED: Cat(header, *arg[:SETTING.size], _le(count, 16)),
        }
        sizes = {kind: len(word) // 8 for kind, word in words.items()} | {Reply.INFO: HEADER.size + len(self.info)}
        for kind, word in words.items():
            if len(word) % 8 or sizes[kind] > 64:
                raise PoiseError(f"reply {kind.name} is {len(word)} bits and {sizes[kind]} bytes, not whole bytes "
                                 f"within 64")
        reply_size = Array(Const(sizes[kind], 7) for kind in Reply)[reply_kind]
        emit_index = write_address[:6]
        reply_byte = _reply_mux(m, reply_kind, emit_index,
                                {kind: [word.word_select(k, 8) for k in range(len(word) // 8)]
                                 for kind, word in words.items()})

        write_enable = Signal()
        m.d.comb += [sender.write_addr.eq(Array(sender.bases)[area] | write_address),
                     sender.write_data.eq(reply_byte), sender.write_enable.eq(write_enable)]

        # -- the state machine ---------------------------------------------------------------------------------
        def reply(kind: Reply, where: Area = Area.MAIN, error: ErrorCode | None = None, then_read: bool = False
                  ) -> list:
            """Start writing reply ``kind`` into area ``where``, then send it (or, ``then_read``, read values)."""
            return [reply_kind.eq(kind), area.eq(where), read_after.eq(then_read), write_address.eq(0),
                    *([code.eq(error)] if error is not None else [])]

        def refuse(error: ErrorCode, held: bool = True) -> None:
            """Answer the current request with an error (a stored reply) and let its packet go (if still
            ``held``: one let go already may be the next request's)."""
            m.d.sync += [*reply(Reply.ERROR, error=error), *bump(refused)]
            if held:
                m.d.comb += receiver.packet.ready.eq(1)
            m.next = "EMIT"

        with m.FSM(name="controller") as fsm:
            with m.State("WAIT"), m.If(receiver.packet.valid):
                packet = receiver.packet.payload
                with m.If(packet.status == FrameStatus.TOO_LONG):
                    m.d.sync += bump(long_frames)
                with m.Elif((packet.status != FrameStatus.OK) | (packet.length < HEADER.size)):
                    m.d.sync += bump(bad_frames)
                with m.If(packet.length < HEADER.size):  # no header to answer to
                    m.d.comb += receiver.packet.ready.eq(1)
                with m.Else():  # the byte at 0 is being read, the next one is read next
                    m.d.sync += position.eq(1)
                    m.next = "FIELDS"
            # The first FIELDS bytes, whatever the opcode, one per cycle (each read a cycle before it is
            # taken), shifted in from the top.
            with m.State("FIELDS"):
                m.d.sync += [fields.eq(Cat(fields[8:], byte)), position.eq(position + 1)]
                with m.If(position == FIELDS):
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):  # rules 1 to 4 of docs/PROTOCOL.md, in order
                with m.If(status != FrameStatus.OK):  # rule 1: answered from the FAILED area, not stored
                    m.d.comb += receiver.packet.ready.eq(1)
                    m.d.sync += [*reply(Reply.ERROR, Area.FAILED),
                                 code.eq(Mux(status == FrameStatus.TOO_LONG, ErrorCode.FRAME_TOO_LONG,
                                             ErrorCode.BAD_CRC))]
                    m.next = "EMIT"
                with m.Elif(last_valid & (sequence == last_sequence) & (opcode == last_opcode)):  # rule 3
                    m.d.comb += receiver.packet.ready.eq(1)
                    m.next = "RESEND"
                with m.Elif(version != PROTOCOL_VERSION):
                    refuse(ErrorCode.BAD_VERSION)
                with m.Elif(~opcode.matches(*NEEDS)):
                    refuse(ErrorCode.UNKNOWN_OPCODE)
                with m.Elif(bad_length):
                    refuse(ErrorCode.BAD_LENGTH)
                with m.Elif(opcode.matches(Opcode.INFO, Opcode.STATUS, Opcode.RESET)):  # no payload: let it go
                    m.d.comb += receiver.packet.ready.eq(1)
                    m.next = "SIMPLE"
                with m.Else():
                    m.next = "CHECK"

            with m.State("RESEND"), m.If(~sender.busy):
                m.d.comb += [sender.send.valid.eq(1), sender.send.payload.length.eq(last_length),
                             sender.send.payload.area.eq(last_area)]
                with m.If(sender.send.ready):
                    m.d.sync += position.eq(0)
                    m.next = "WAIT"

            with m.State("SIMPLE"):  # INFO, STATUS, RESET: no payload, the packet already let go
                with m.Switch(opcode):
                    with m.Case(Opcode.INFO):
                        m.d.sync += reply(Reply.INFO, Area.INFO)
                    with m.Case(Opcode.STATUS):
                        m.d.sync += reply(Reply.STATUS)
                    with m.Default():  # RESET
                        m.d.comb += self.core_reset.eq(1)
                        m.d.sync += [*reply(Reply.HEADER), learn.eq(1), lr_shift.eq(0), images.eq(0)]
                m.next = "EMIT"

            with m.State("CHECK"), m.Switch(opcode):
                with m.Case(Opcode.SET):
                    small = (arg[1] == 0) & (setting_value[8:] == 0)  # index 0, value 0 … 255
                    with m.If((arg[0] == Parameter.LEARN) & small & (arg[2][1:] == 0)):
                        m.d.sync += [learn.eq(arg[2][0]), *reply(Reply.SETTING)]
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.next = "EMIT"
                    with m.Elif((arg[0] == Parameter.LR_SHIFT) & small & (arg[2] <= MAX_LR_SHIFT)
                                & (fixed.eta is not None)):
                        m.d.sync += [lr_shift.eq(arg[2]), *reply(Reply.SETTING)]
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.next = "EMIT"
                    with m.Else():
                        refuse(ErrorCode.OUT_OF_RANGE)
                with m.Case(Opcode.READ_WEIGHTS):
                    with m.If(~access_ok | (read_count == 0) | (read_count > MAX_READ)):
                        refuse(ErrorCode.OUT_OF_RANGE)
                    with m.Else():  # the run is checked as it is read (before the reply is sent)
                        m.d.sync += [row.eq(arg_row), col.eq(arg_col), count.eq(0),
                                     *reply(Reply.HEADER, then_read=True)]
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.next = "EMIT"
                with m.Case(Opcode.LOAD_WEIGHTS):
                    with m.If(~access_ok):
                        refuse(ErrorCode.OUT_OF_RANGE)
                    with m.Else():
                        m.d.sync += [row.eq(arg_row), col.eq(arg_col), count.eq(0), dry.eq(1),
                                     position.eq(HEADER.size + ACCESS.size)]
                        m.next = "VALUE_FETCH_LOW"
                with m.Case(Opcode.TRAIN):
                    with m.If((label >= n_out) | (flags[1:] != 0) | (fixed.eta is None)):
                        refuse(ErrorCode.OUT_OF_RANGE)
                    with m.Else():
                        m.next = "IMAGE"
                with m.Default():  # INFER
                    m.next = "IMAGE"

            # LOAD: first `dry`, the run must stay inside the matrix and the values inside their format
            # (`count` counts the values checked: the reply reports them); then the values are read again
            # with the same states and written through the core's parameter port. Each value: its low byte
            # into `low`, then `position` stays at its high byte (so `byte` is that) until it is used.
            with m.State("VALUE_FETCH_LOW"):  # the low byte is read; the high one next
                m.d.sync += position.eq(position + 1)
                m.next = "VALUE_LOW"
            with m.State("VALUE_LOW"):
                m.d.sync += low.eq(byte)
                m.next = "VALUE_HIGH"

            with m.State("VALUE_HIGH"):
                with m.If(~dry):
                    m.next = "LOAD_REQUEST"
                with m.Elif(~in_format):
                    refuse(ErrorCode.OUT_OF_RANGE)
                with m.Else():
                    m.d.sync += position.eq(position + 1)
                    m.next = "WALK_NEXT"
            with m.State("WALK_NEXT"):
                with m.If(row >= row_limit):
                    refuse(ErrorCode.OUT_OF_RANGE)
                with m.Elif(load_done):
                    m.d.sync += [row.eq(arg_row), col.eq(arg_col), position.eq(HEADER.size + ACCESS.size),
                                 count.eq(next_count), dry.eq(0)]
                    m.next = "VALUE_FETCH_LOW"
                with m.Else():
                    m.d.sync += [count.eq(next_count), *step_position()]
                    m.next = "VALUE_FETCH_LOW"
            with m.State("LOAD_REQUEST"):
                m.d.comb += [
                    self.parameter_request.valid.eq(1),
                    self.parameter_request.payload.write.eq(1), self.parameter_request.payload.bias.eq(is_bias),
                    self.parameter_request.payload.layer.eq(layer), self.parameter_request.payload.row.eq(row),
                    self.parameter_request.payload.col.eq(col),
                    self.parameter_request.payload.value.eq(loaded_value.as_signed()),
                ]
                with m.If(self.parameter_request.ready):
                    m.d.sync += position.eq(position + 1)
                    m.next = "LOAD_RESPONSE"
            with m.State("LOAD_RESPONSE"):
                m.d.comb += self.parameter_response.ready.eq(1)
                with m.If(self.parameter_response.valid):
                    m.d.sync += step_position()
                    with m.If(load_done):
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.d.sync += reply(Reply.LOADED)
                        m.next = "EMIT"
                    with m.Else():
                        m.next = "VALUE_FETCH_LOW"

            # READ: one value per parameter access, two bytes each, after the header; the first outside the
            # matrix refuses the request (the error reply is written over the values).
            with m.State("READ_REQUEST"):
                with m.If(row >= row_limit):
                    refuse(ErrorCode.OUT_OF_RANGE, held=False)
                with m.Else():
                    m.d.comb += [
                        self.parameter_request.valid.eq(1), self.parameter_request.payload.bias.eq(is_bias),
                        self.parameter_request.payload.layer.eq(layer), self.parameter_request.payload.row.eq(row),
                        self.parameter_request.payload.col.eq(col),
                    ]
                    with m.If(self.parameter_request.ready):
                        m.next = "READ_RESPONSE"
            with m.State("READ_RESPONSE"):
                m.d.comb += self.parameter_response.ready.eq(1)
                value = _le(self.parameter_response.payload.value, 16)
                with m.If(self.parameter_response.valid):
                    m.d.comb += [write_enable.eq(1), sender.write_data.eq(value[:8])]
                    m.d.sync += [low.eq(value[8:]), write_address.eq(write_address + 1)]
                    m.next = "READ_HIGH"
            with m.State("READ_HIGH"):  # the high byte, kept in `low`
                m.d.comb += [write_enable.eq(1), sender.write_data.eq(low)]
                m.d.sync += [write_address.eq(write_address + 1), count.eq(next_count), *step_position()]
                with m.If(read_done):
                    m.next = "SEND"
                with m.Else():
                    m.next = "READ_REQUEST"

            # INFER and TRAIN: check the image's encoding completely, then stream it into the core. A PACKED
            # image is decoded twice by the same states: first `dry` (no pixel goes out; any fault refuses
            # it, BAD_ENCODING: too many or too few pixels, a zero without a run length or with run 0), then
            # into the core, at the pace the core's cycle count has always seen.
            train_start, infer_start = HEADER.size + TRAIN_HEAD.size, HEADER.size + INFER_HEAD.size
            image_start = Mux(opcode == Opcode.TRAIN, train_start, infer_start)
            with m.State("IMAGE"):
                m.d.sync += [position.eq(image_start), count.eq(0), run.eq(0), dry.eq(1)]
                with m.If(raw):
                    with m.If(length != Mux(opcode == Opcode.TRAIN, train_start + n_in, infer_start + n_in)):
                        refuse(ErrorCode.BAD_LENGTH)
                    with m.Else():
                        m.next = "COMMAND"
                with m.Elif(packed):
                    m.next = "FEED_FETCH"
                with m.Else():
                    refuse(ErrorCode.BAD_ENCODING)

            with m.State("COMMAND"):
                payload = self.command.payload
                m.d.comb += [
                    self.command.valid.eq(1), payload.train.eq(opcode == Opcode.TRAIN),
                    payload.learn.eq((opcode == Opcode.TRAIN) & learn), payload.label.eq(label),
                    payload.beta_negative.eq(flags[0] & (opcode == Opcode.TRAIN)), payload.lr_shift.eq(lr_shift),
                ]
                with m.If(self.command.ready):
                    m.d.sync += [count.eq(0), run.eq(0), dry.eq(0)]
                    m.next = "FEED_FETCH"
            with m.State("FEED_FETCH"):
                with m.If(count == n_in):  # no more pixels: a dry run must have reached the end exactly
                    with m.If(~dry):
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.next = "RESULT"
                    with m.Elif((run == 0) & (position == length)):
                        m.d.sync += position.eq(image_start)
                        m.next = "COMMAND"
                    with m.Else():
                        refuse(ErrorCode.BAD_ENCODING)
                with m.Elif(run != 0):
                    m.next = "FEED_ZEROS"
                with m.Elif(dry & (position == length)):
                    refuse(ErrorCode.BAD_ENCODING)
                with m.Else():
                    m.next = "FEED_TAKE"
            with m.State("FEED_TAKE"):
                with m.If(packed & (byte == 0)):

                    with m.If(dry & (position + 1 == length)):  # a zero with no run length
                        refuse(ErrorCode.BAD_ENCODING)
                    with m.Else():
                        m.d.sync += position.eq(position + 1)
                        m.next = "FEED_RUN_FETCH"
                with m.Else():
                    m.d.comb += [self.pixels.valid.eq(~dry), self.pixels.payload.eq(byte)]
                    with m.If(dry | self.pixels.ready):
                        m.d.sync += [position.eq(position + 1), count.eq(next_count)]
                        m.next = "FEED_FETCH"
            with m.State("FEED_RUN_FETCH"):
                m.next = "FEED_RUN"
            with m.State("FEED_RUN"):
                with m.If(dry & (byte == 0)):
                    refuse(ErrorCode.BAD_ENCODING)
                with m.Else():
                    m.d.sync += [run.eq(byte), position.eq(position + 1)]
                    m.next = "FEED_FETCH"
            with m.State("FEED_ZEROS"):
                m.d.comb += [self.pixels.valid.eq(~dry), self.pixels.payload.eq(0)]
                with m.If(dry | self.pixels.ready):
                    m.d.sync += [run.eq(run - 1), count.eq(next_count)]
                    m.next = "FEED_FETCH"
            with m.State("RESULT"), m.If(self.result.valid):
                m.d.sync += [*reply(Reply.RESULT), images.eq(images + 1)]
                m.next = "EMIT"

            # Write the reply's bytes once the sender has finished the previous reply (INFO: the header only).
            with m.State("EMIT"), m.If(~sender.busy):
                m.d.comb += write_enable.eq((reply_kind != Reply.INFO) | (emit_index < HEADER.size))
                m.d.sync += write_address.eq(write_address + 1)
                with m.If(emit_index == reply_size - 1):
                    m.next = "SEND"
                    with m.If(read_after):
                        m.next = "READ_REQUEST"
            with m.State("SEND"), m.If(~sender.busy):
                m.d.comb += [sender.send.valid.eq(1), sender.send.payload.length.eq(write_address),
                             sender.send.payload.area.eq(area)]
                with m.If(sender.send.ready):
                    m.d.comb += self.error.eq(reply_kind == Reply.ERROR)
                    with m.If(area != Area.FAILED):  # a stored reply (rule 3)
                        with m.If(reply_kind == Reply.RESULT):
                            m.d.comb += self.result.ready.eq(1)
                        m.d.sync += [last_sequence.eq(sequence), last_opcode.eq(opcode), last_valid.eq(1),
                                     last_length.eq(write_address), last_area.eq(area)]
                    m.d.sync += position.eq(0)
                    m.next = "WAIT"

            m.d.comb += self.busy.eq(~fsm.ongoing("WAIT") | sender.busy)
        return m
