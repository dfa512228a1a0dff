"""The command controller: UART bytes in, UART bytes out, the network core in between — docs/PROTOCOL.md in
gateware, byte for byte the reference device :class:`poise.firmware.reference.ReferenceDevice` (except the
cycle counts, which only the gateware knows).

Frames come in through a :class:`~poise.rtl.frame.FrameReceiver`, which holds each packet in its buffer until
the controller lets it go. Replies are written into a :class:`~poise.rtl.frame.FrameSender`'s buffer and
sent from there; that buffer is kept, so a repeated request (same sequence number and opcode) is answered by
sending it again. Error replies to failed frames go through a second, small sender, so they never disturb
the stored reply. Every request is checked completely before anything happens: a LOAD_WEIGHTS with one bad
value writes nothing, an image that does not decode never reaches the core.
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


class Reply(enum.IntEnum):
    """Which reply the emitter writes: each is a header and a fixed layout of fields."""

    ERROR = 0
    HEADER = 1
    INFO = 2
    STATUS = 3
    RESULT = 4
    SETTING = 5
    LOADED = 6


class _After(enum.IntEnum):
    """Where the controller goes once a reply is written."""

    SEND = 0
    SEND_ERROR = 1
    READ_LOOP = 2


def _le(value: Value, width: int) -> Value:
    """``value`` as exactly ``width`` bits, sign- or zero-extended: a little-endian field of the reply."""
    value = Value.cast(value)
    if len(value) >= width:
        return value[:width]
    fill = value[-1] if value.shape().signed else Const(0, 1)
    return Cat(value, fill.replicate(width - len(value)))


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
        self.receiver = FrameReceiver(max_body)
        self.sender = FrameSender(REPLY_BODY)
        self.error_sender = FrameSender(ERROR_BODY)
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
        m.submodules.error_sender = error_sender = self.error_sender
        wiring.connect(m, wiring.flipped(self.rx), receiver.i)

        # The two senders share tx: only one is ever sending (the controller starts one when both are idle).
        with m.If(error_sender.busy):
            m.d.comb += [self.tx.valid.eq(error_sender.o.valid), self.tx.payload.eq(error_sender.o.payload),
                         error_sender.o.ready.eq(self.tx.ready)]
        with m.Else():
            m.d.comb += [self.tx.valid.eq(sender.o.valid), self.tx.payload.eq(sender.o.payload),
                         sender.o.ready.eq(self.tx.ready)]
        senders_idle = ~sender.busy & ~error_sender.busy

        # -- registers ---------------------------------------------------------------------------------------
        status = Signal(FrameStatus)
        length = Signal(range(self.max_body + 3))
        version, sequence, opcode = Signal(8), Signal(8), Signal(8)
        last_sequence, last_opcode, last_valid = Signal(8), Signal(8), Signal()
        last_length = Signal(range(REPLY_BODY + 1))
        args = Signal(64)  # the request's fixed fields, little endian, as received
        arg_index = Signal(range(9))
        arg_count = Signal(range(9))
        position = Signal(range(self.max_body + 3))  # buffer address of the next byte to read
        code = Signal(8)  # error code of an error reply
        learn = Signal(init=1)
        lr_shift = Signal(range(MAX_LR_SHIFT + 1))
        images = Signal(32)
        refused = Signal(COUNTER_BITS)
        short_frames = Signal(COUNTER_BITS)
        pixel_count = Signal(range(n_in + 256 + 1))  # decoded so far; stops counting once past n_in
        run = Signal(8)
        count = Signal(range(max(MAX_READ, self.max_body) + 1))  # values still to check, write or read
        done = Signal(range(max(MAX_READ, self.max_body) + 1))  # values handled, for the reply
        row, col = Signal(16), Signal(16)
        value = Signal(16)
        low = Signal(8)
        reply_kind = Signal(Reply)
        after = Signal(_After)
        emit_index = Signal(range(64))
        write_address = Signal(range(REPLY_BODY + 1))
        payload_length = Signal(range(self.max_body + 3))
        m.d.comb += payload_length.eq(length - HEADER.size)

        fetch = Signal(range(self.max_body + 2))
        m.d.comb += [fetch.eq(position), receiver.read_addr.eq(fetch)]
        byte = receiver.read_data

        def bump(counter: Signal) -> list:
            return [counter.eq(counter + (counter != (1 << len(counter)) - 1))]

        # -- request fields ------------------------------------------------------------------------------------
        arg = [args.word_select(k, 8) for k in range(8)]
        target, layer = arg[0], arg[1]
        arg_row, arg_col = Cat(arg[2], arg[3]), Cat(arg[4], arg[5])
        read_count = Cat(arg[6], arg[7])
        label, flags = arg[0], arg[1]
        encoding = Mux(opcode == Opcode.TRAIN, arg[2], arg[0])
        setting_value = Cat(arg[2], arg[3], arg[4], arg[5]).as_signed()
        rows = Array(Const(n, 16) for n in layers[:-1])[layer[:max(matrices - 1, 1).bit_length()]]
        cols = Array(Const(n, 16) for n in layers[1:])[layer[:max(matrices - 1, 1).bit_length()]]
        is_bias = target == Target.BIASES
        row_limit = Mux(is_bias, 1, rows)
        value_signed = value.as_signed()
        in_format = Mux(is_bias,
                        (value_signed >= fixed.bias.min_raw) & (value_signed <= fixed.bias.max_raw),
                        (value_signed >= fixed.weight.min_raw) & (value_signed <= fixed.weight.max_raw))
        access_ok = (target <= Target.BIASES) & (layer < matrices) & (arg_row < row_limit) & (arg_col < cols)

        def step_position() -> list:
            """The next (row, col) of a row-major run."""
            wrap = col == cols - 1
            return [col.eq(Mux(wrap, 0, col + 1)), row.eq(row + wrap)]

        # -- reply words: header, then the reply's fields, little endian --------------------------------------
        result = self.result.payload
        reply_opcode = Mux(reply_kind == Reply.ERROR, Opcode.ERROR, opcode | REPLY)
        header = Cat(Const(PROTOCOL_VERSION, 8), sequence, reply_opcode[:8])
        status_counters = Cat(
            self.framing_errors, self.parity_errors, self.overruns,
            Mux((receiver.bad_frames + short_frames) > 0xFFFF, 0xFFFF, receiver.bad_frames + short_frames)[:16],
            receiver.long_frames, refused, images, Cat(learn, Const(0, 7)))
        outputs = Cat(*(_le(result.outputs[k], 16) for k in range(n_out)))
        words = {
            Reply.ERROR: Cat(header, code, opcode),
            Reply.HEADER: header,
            Reply.INFO: Cat(header, Const(int.from_bytes(self.info, "little"), 8 * len(self.info))),
            Reply.STATUS: Cat(header, status_counters),
            Reply.RESULT: Cat(header, _le(result.prediction, 8), result.spikes, result.synops, result.cycles,
                              result.synapse_cycles, outputs),
            Reply.SETTING: Cat(header, args[:48]),
            Reply.LOADED: Cat(header, args[:48], _le(done, 16)),
        }
        for kind, word in words.items():
            if len(word) % 8 or len(word) // 8 > 64:
                raise PoiseError(f"reply {kind.name} is {len(word)} bits, not whole bytes within 64")
        sizes = Array(Const(len(word) // 8, 7) for word in (words[kind] for kind in Reply))
        reply_size = sizes[reply_kind]
        reply_byte = Signal(8)
        with m.Switch(reply_kind):
            for kind, word in words.items():
                with m.Case(kind):
                    m.d.comb += reply_byte.eq(word.word_select(emit_index[:max(len(word) // 8 - 1, 1).bit_length()], 8))

        to_error_sender = Signal()  # the reply being written goes to the error sender (failed frames)
        m.d.comb += [
            sender.write_addr.eq(write_address), sender.write_data.eq(reply_byte),
            error_sender.write_addr.eq(write_address), error_sender.write_data.eq(reply_byte),
        ]
        write_enable = Signal()
        m.d.comb += [sender.write_enable.eq(write_enable & ~to_error_sender),
                     error_sender.write_enable.eq(write_enable & to_error_sender)]

        # -- the state machine ---------------------------------------------------------------------------------
        def reply(kind: Reply, then: _After, error: ErrorCode | None = None) -> list:
            """Start writing reply ``kind`` (to the reply buffer), then go on at ``then``."""
            return [reply_kind.eq(kind), after.eq(then), emit_index.eq(0), write_address.eq(0),
                    *([code.eq(error)] if error is not None else [])]

        def refuse(error: ErrorCode) -> None:
            """Answer the current request with an error (a stored reply) and let its packet go."""
            m.d.sync += [*reply(Reply.ERROR, _After.SEND, error), *bump(refused)]
            m.d.comb += receiver.packet.ready.eq(1)
            m.next = "EMIT"

        def value_states(prefix: str, then: str) -> None:
            """States ``prefix``_FETCH_LOW … that read the int16 at ``position`` into ``value``, then go to ``then``."""
            with m.State(f"{prefix}_FETCH_LOW"):
                m.next = f"{prefix}_LOW"
            with m.State(f"{prefix}_LOW"):
                m.d.sync += [low.eq(byte), position.eq(position + 1)]
                m.next = f"{prefix}_FETCH_HIGH"
            with m.State(f"{prefix}_FETCH_HIGH"):
                m.next = f"{prefix}_HIGH"
            with m.State(f"{prefix}_HIGH"):
                m.d.sync += [value.eq(Cat(low, byte)), position.eq(position + 1)]
                m.next = then

        def fetch_args(n: int, first: int = HEADER.size) -> None:
            m.d.sync += [arg_index.eq(0), arg_count.eq(n), position.eq(first), args.eq(0)]
            m.next = "ARGS"

        with m.FSM(name="controller") as fsm:
            with m.State("WAIT"):
                m.d.comb += fetch.eq(0)
                with m.If(receiver.packet.valid):
                    m.d.sync += [status.eq(receiver.packet.payload.status), length.eq(receiver.packet.payload.length)]
                    with m.If(receiver.packet.payload.length < 3):  # no header to answer to
                        m.d.comb += receiver.packet.ready.eq(1)
                        with m.If(receiver.packet.payload.status == FrameStatus.OK):
                            m.d.sync += bump(short_frames)
                    with m.Else():
                        m.next = "VERSION"
            with m.State("VERSION"):
                m.d.comb += fetch.eq(1)
                m.d.sync += version.eq(byte)
                m.next = "SEQUENCE"
            with m.State("SEQUENCE"):
                m.d.comb += fetch.eq(2)
                m.d.sync += sequence.eq(byte)
                m.next = "OPCODE"
            with m.State("OPCODE"):
                m.d.sync += opcode.eq(byte)
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(status != FrameStatus.OK):  # rule 1: answered by the error sender, not stored
                    m.d.comb += receiver.packet.ready.eq(1)
                    m.d.sync += [*reply(Reply.ERROR, _After.SEND_ERROR),
                                 code.eq(Mux(status == FrameStatus.TOO_LONG, ErrorCode.FRAME_TOO_LONG,
                                             ErrorCode.BAD_CRC))]
                    m.next = "EMIT"
                with m.Elif(last_valid & (sequence == last_sequence) & (opcode == last_opcode)):  # rule 3
                    m.d.comb += receiver.packet.ready.eq(1)
                    m.next = "RESEND"
                with m.Elif(version != PROTOCOL_VERSION):
                    refuse(ErrorCode.BAD_VERSION)
                with m.Else(), m.Switch(opcode):
                    with m.Case(Opcode.INFO, Opcode.STATUS, Opcode.RESET):
                        with m.If(payload_length != 0):
                            refuse(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            m.d.comb += receiver.packet.ready.eq(1)
                            m.next = "SIMPLE"
                    with m.Case(Opcode.SET):
                        with m.If(payload_length != SETTING.size):
                            refuse(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            fetch_args(SETTING.size)
                    with m.Case(Opcode.READ_WEIGHTS):
                        with m.If(payload_length != READ.size):
                            refuse(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            fetch_args(READ.size)
                    with m.Case(Opcode.LOAD_WEIGHTS):
                        with m.If((payload_length < ACCESS.size + 2) | (payload_length[0] != ACCESS.size % 2)):
                            refuse(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            fetch_args(ACCESS.size)
                    with m.Case(Opcode.INFER):
                        with m.If(payload_length < INFER_HEAD.size):
                            refuse(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            fetch_args(INFER_HEAD.size)
                    with m.Case(Opcode.TRAIN):
                        with m.If(payload_length < TRAIN_HEAD.size):
                            refuse(ErrorCode.BAD_LENGTH)
                        with m.Else():
                            fetch_args(TRAIN_HEAD.size)
                    with m.Default():
                        refuse(ErrorCode.UNKNOWN_OPCODE)

            with m.State("RESEND"), m.If(senders_idle):
                m.d.comb += [sender.send.valid.eq(1), sender.send.payload.eq(last_length)]
                with m.If(sender.send.ready):
                    m.next = "WAIT"

            with m.State("SIMPLE"):  # INFO, STATUS, RESET: no payload, the packet already let go
                with m.Switch(opcode):
                    with m.Case(Opcode.INFO):
                        m.d.sync += reply(Reply.INFO, _After.SEND)
                    with m.Case(Opcode.STATUS):
                        m.d.sync += reply(Reply.STATUS, _After.SEND)
                    with m.Default():  # RESET
                        m.d.comb += self.core_reset.eq(1)
                        m.d.sync += [*reply(Reply.HEADER, _After.SEND), learn.eq(1), lr_shift.eq(0), images.eq(0)]
                m.next = "EMIT"

            # The fixed fields after the header, one byte per two cycles (fetch, then take).
            with m.State("ARGS"):
                m.next = "ARGS_TAKE"
            with m.State("ARGS_TAKE"):
                m.d.sync += [args.word_select(arg_index, 8).eq(byte), arg_index.eq(arg_index + 1),
                             position.eq(position + 1)]
                with m.If(arg_index == arg_count - 1):
                    m.next = "CHECK"
                with m.Else():
                    m.next = "ARGS"

            with m.State("CHECK"), m.Switch(opcode):
                with m.Case(Opcode.SET):
                    lr_ok = (arg[1] == 0) & (setting_value >= 0) & (setting_value <= MAX_LR_SHIFT)
                    learn_ok = (arg[1] == 0) & ((setting_value == 0) | (setting_value == 1))
                    with m.If((arg[0] == Parameter.LEARN) & learn_ok):
                        m.d.sync += [learn.eq(setting_value[0]), *reply(Reply.SETTING, _After.SEND)]
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.next = "EMIT"
                    with m.Elif((arg[0] == Parameter.LR_SHIFT) & lr_ok & (fixed.eta is not None)):
                        m.d.sync += [lr_shift.eq(setting_value), *reply(Reply.SETTING, _After.SEND)]
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.next = "EMIT"
                    with m.Else():
                        refuse(ErrorCode.OUT_OF_RANGE)
                with m.Case(Opcode.READ_WEIGHTS):
                    with m.If(~access_ok | (read_count == 0) | (read_count > MAX_READ)):
                        refuse(ErrorCode.OUT_OF_RANGE)
                    with m.Else():
                        m.d.sync += [row.eq(arg_row), col.eq(arg_col), count.eq(read_count), done.eq(0)]
                        m.next = "WALK"
                with m.Case(Opcode.LOAD_WEIGHTS):
                    with m.If(~access_ok):
                        refuse(ErrorCode.OUT_OF_RANGE)
                    with m.Else():
                        m.d.sync += [row.eq(arg_row), col.eq(arg_col), count.eq((payload_length - ACCESS.size) >> 1),
                                     done.eq(0)]
                        m.next = "WALK"
                with m.Case(Opcode.TRAIN):
                    with m.If((label >= n_out) | (flags[1:] != 0) | (fixed.eta is None)):
                        refuse(ErrorCode.OUT_OF_RANGE)
                    with m.Else():
                        m.next = "IMAGE"
                with m.Default():  # INFER
                    m.next = "IMAGE"

            # LOAD and READ: the run must stay inside the matrix; LOAD's values inside their format.
            with m.State("WALK"):
                with m.If(opcode == Opcode.LOAD_WEIGHTS):
                    m.next = "WALK_FETCH_LOW"
                with m.Else():
                    m.next = "WALK_NEXT"
            value_states("WALK", "WALK_VALUE")
            with m.State("WALK_VALUE"):
                with m.If(~in_format):
                    refuse(ErrorCode.OUT_OF_RANGE)
                with m.Else():
                    m.next = "WALK_NEXT"
            with m.State("WALK_NEXT"):
                with m.If(row >= row_limit):
                    refuse(ErrorCode.OUT_OF_RANGE)
                with m.Elif(count == 1):
                    m.d.sync += [row.eq(arg_row), col.eq(arg_col), position.eq(HEADER.size + ACCESS.size)]
                    with m.If(opcode == Opcode.LOAD_WEIGHTS):
                        m.d.sync += count.eq((payload_length - ACCESS.size) >> 1)
                        m.next = "LOAD_FETCH_LOW"
                    with m.Else():
                        m.d.sync += [count.eq(read_count), *reply(Reply.HEADER, _After.READ_LOOP)]
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.next = "EMIT"
                with m.Else():
                    m.d.sync += [count.eq(count - 1), *step_position()]
                    m.next = "WALK"

            # LOAD: write the checked values through the core's parameter port.
            value_states("LOAD", "LOAD_REQUEST")
            with m.State("LOAD_REQUEST"):
                m.d.comb += [
                    self.parameter_request.valid.eq(1),
                    self.parameter_request.payload.write.eq(1), self.parameter_request.payload.bias.eq(is_bias),
                    self.parameter_request.payload.layer.eq(layer), self.parameter_request.payload.row.eq(row),
                    self.parameter_request.payload.col.eq(col), self.parameter_request.payload.value.eq(value_signed),
                ]
                with m.If(self.parameter_request.ready):
                    m.next = "LOAD_RESPONSE"
            with m.State("LOAD_RESPONSE"):
                m.d.comb += self.parameter_response.ready.eq(1)
                with m.If(self.parameter_response.valid):
                    m.d.sync += [done.eq(done + 1), count.eq(count - 1), *step_position()]
                    with m.If(count == 1):
                        m.d.comb += receiver.packet.ready.eq(1)
                        m.d.sync += reply(Reply.LOADED, _After.SEND)
                        m.next = "EMIT"
                    with m.Else():
                        m.next = "LOAD_FETCH_LOW"

            # READ: one value per parameter access, two bytes each, after the header.
            with m.State("READ_REQUEST"):
                m.d.comb += [
                    self.parameter_request.valid.eq(1), self.parameter_request.payload.bias.eq(is_bias),
                    self.parameter_request.payload.layer.eq(layer), self.parameter_request.payload.row.eq(row),
                    self.parameter_request.payload.col.eq(col),
                ]
                with m.If(self.parameter_request.ready):
                    m.next = "READ_RESPONSE"
            with m.State("READ_RESPONSE"):
                m.d.comb += self.parameter_response.ready.eq(1)
                with m.If(self.parameter_response.valid):
                    m.d.sync += value.eq(self.parameter_response.payload.value)
                    m.next = "READ_LOW"
            with m.State("READ_LOW"):
                m.d.comb += [write_enable.eq(1), sender.write_data.eq(value[:8])]
                m.d.sync += write_address.eq(write_address + 1)
                m.next = "READ_HIGH"
            with m.State("READ_HIGH"):
                m.d.comb += [write_enable.eq(1), sender.write_data.eq(value[8:])]
                m.d.sync += [write_address.eq(write_address + 1), count.eq(count - 1), *step_position()]
                with m.If(count == 1):
                    m.next = "SEND"
                with m.Else():
                    m.next = "READ_REQUEST"

            # INFER and TRAIN: check the image's encoding completely, then stream it into the core.
            image_start = Mux(opcode == Opcode.TRAIN, HEADER.size + TRAIN_HEAD.size, HEADER.size + INFER_HEAD.size)
            with m.State("IMAGE"):
                m.d.sync += [position.eq(image_start), pixel_count.eq(0)]
                with m.If(encoding == Encoding.RAW):
                    with m.If(payload_length - (image_start - HEADER.size) != n_in):
                        refuse(ErrorCode.BAD_LENGTH)
                    with m.Else():
                        m.next = "COMMAND"
                with m.Elif(encoding == Encoding.PACKED):
                    m.next = "COUNT_FETCH"
                with m.Else():
                    refuse(ErrorCode.BAD_ENCODING)
            with m.State("COUNT_FETCH"):
                with m.If(position == length):
                    with m.If(pixel_count == n_in):
                        m.d.sync += position.eq(image_start)
                        m.next = "COMMAND"
                    with m.Else():
                        refuse(ErrorCode.BAD_ENCODING)
                with m.Elif(pixel_count > n_in):
                    refuse(ErrorCode.BAD_ENCODING)
                with m.Else():
                    m.next = "COUNT_TAKE"
            with m.State("COUNT_TAKE"):
                with m.If(byte != 0):
                    m.d.sync += [pixel_count.eq(pixel_count + 1), position.eq(position + 1)]
                    m.next = "COUNT_FETCH"
                with m.Elif(position + 1 == length):  # a zero with no run length
                    refuse(ErrorCode.BAD_ENCODING)
                with m.Else():
                    m.d.sync += position.eq(position + 1)
                    m.next = "COUNT_RUN_FETCH"
            with m.State("COUNT_RUN_FETCH"):
                m.next = "COUNT_RUN"
            with m.State("COUNT_RUN"):
                with m.If(byte == 0):
                    refuse(ErrorCode.BAD_ENCODING)
                with m.Else():
                    m.d.sync += [pixel_count.eq(pixel_count + byte), position.eq(position + 1)]
                    m.next = "COUNT_FETCH"

            with m.State("COMMAND"):
                payload = self.command.payload
                m.d.comb += [
                    self.command.valid.eq(1), payload.train.eq(opcode == Opcode.TRAIN),
                    payload.learn.eq((opcode == Opcode.TRAIN) & learn), payload.label.eq(label),
                    payload.beta_negative.eq(flags[0] & (opcode == Opcode.TRAIN)), payload.lr_shift.eq(lr_shift),
                ]
                with m.If(self.command.ready):
                    m.d.sync += [pixel_count.eq(0), run.eq(0)]
                    m.next = "FEED_FETCH"
            with m.State("FEED_FETCH"):
                with m.If(pixel_count == n_in):
                    m.d.comb += receiver.packet.ready.eq(1)
                    m.next = "RESULT"
                with m.Elif(run != 0):
                    m.next = "FEED_ZEROS"
                with m.Else():
                    m.next = "FEED_TAKE"
            with m.State("FEED_TAKE"):
                with m.If((encoding == Encoding.PACKED) & (byte == 0)):
                    m.d.sync += position.eq(position + 1)
                    m.next = "FEED_RUN_FETCH"
                with m.Else():
                    m.d.comb += [self.pixels.valid.eq(1), self.pixels.payload.eq(byte)]
                    with m.If(self.pixels.ready):
                        m.d.sync += [position.eq(position + 1), pixel_count.eq(pixel_count + 1)]
                        m.next = "FEED_FETCH"
            with m.State("FEED_RUN_FETCH"):
                m.next = "FEED_RUN"
            with m.State("FEED_RUN"):
                m.d.sync += [run.eq(byte), position.eq(position + 1)]
                m.next = "FEED_FETCH"
            with m.State("FEED_ZEROS"):
                m.d.comb += [self.pixels.valid.eq(1), self.pixels.payload.eq(0)]
                with m.If(self.pixels.ready):
                    m.d.sync += [run.eq(run - 1), pixel_count.eq(pixel_count + 1)]
                    m.next = "FEED_FETCH"
            with m.State("RESULT"), m.If(self.result.valid):
                m.d.sync += [*reply(Reply.RESULT, _After.SEND), images.eq(images + 1)]
                m.next = "EMIT"

            # Write the reply's bytes (once the sender it goes to has finished the previous reply).
            with m.State("EMIT"):
                m.d.comb += to_error_sender.eq(after == _After.SEND_ERROR)
                busy_target = Mux(to_error_sender, error_sender.busy, sender.busy)
                with m.If(~busy_target):
                    m.d.comb += write_enable.eq(1)
                    m.d.sync += [emit_index.eq(emit_index + 1), write_address.eq(write_address + 1)]
                    with m.If(emit_index == reply_size - 1), m.Switch(after):
                        with m.Case(_After.SEND):
                            m.next = "SEND"
                        with m.Case(_After.SEND_ERROR):
                            m.next = "SEND_ERROR"
                        with m.Case(_After.READ_LOOP):
                            m.next = "READ_REQUEST"
            with m.State("SEND"), m.If(senders_idle):
                m.d.comb += [sender.send.valid.eq(1), sender.send.payload.eq(write_address)]
                with m.If(sender.send.ready):
                    with m.If(reply_kind == Reply.RESULT):
                        m.d.comb += self.result.ready.eq(1)
                    m.d.comb += self.error.eq(reply_kind == Reply.ERROR)
                    m.d.sync += [last_sequence.eq(sequence), last_opcode.eq(opcode), last_valid.eq(1),
                                 last_length.eq(write_address)]
                    m.next = "WAIT"
            with m.State("SEND_ERROR"), m.If(senders_idle):
                m.d.comb += [error_sender.send.valid.eq(1), error_sender.send.payload.eq(ERROR_BODY)]
                with m.If(error_sender.send.ready):
                    m.d.comb += self.error.eq(1)
                    m.next = "WAIT"
            m.d.comb += self.busy.eq(~fsm.ongoing("WAIT") | ~senders_idle)
        return m

