"""The reference device: docs/PROTOCOL.md executed in Python, on the integer golden model.

:class:`ReferenceDevice` takes the bytes arriving on the device's UART (:meth:`ReferenceDevice.feed`) and
returns the bytes it sends back, so it plugs into a loopback transport in place of a board. The RTL command
controller is compared with it byte for byte, except for the ``cycles`` and ``synapse_cycles`` fields of
image results: the reference does not model time and reports both as 0.

Receiving a frame (rule 1 of "How the device handles a frame"), defined as a streaming decoder sees it so
that the RTL can match it exactly (:func:`receive_frame`):

- The stream is cut at every 0x00. Two delimiters in a row delimit nothing: no frame, no count, no reply.
- The encoded bytes of a frame are COBS-decoded block by block, in order, as a streaming decoder does: a
  code byte k starts a block of k − 1 data bytes, each data byte is written as it arrives, and the implied
  0x00 of a block with k < 255 is written when the *next* code byte arrives (so the last block of a frame
  writes none). "Decoded bytes" of a frame are exactly the bytes such a decoder has written.
- The frame is **oversize** (``FRAME_TOO_LONG``, counted in ``long_frames``) as soon as the decoder would
  write byte ``max_body + 3`` (more than body + CRC). Its first decoded bytes are kept; the rest of the frame
  is dropped up to the delimiter, even if its COBS would break later. Oversize takes precedence over every
  other fault. The encoded limit of :class:`~poise.firmware.framing.FrameSplitter`
  (``MAX_FRAME``, computed here for ``max_body``) is implied: a stream prefix that decodes to d ≤ max_body + 2
  bytes has at most d + ⌊d/254⌋ + 1 encoded bytes, so any frame longer than the encoded limit has already
  passed the decoded limit (both are checked; the second never fires first).
- Otherwise, at the delimiter: COBS is **broken** if the last block is incomplete (its code points past the
  delimiter); the decoded bytes are everything written up to then, including the incomplete block's data
  bytes. A complete frame that decodes to fewer than 2 bytes is **short**; one whose last two decoded bytes
  are not the CRC-16 (LSB first) of the bytes before them has a **bad CRC**. Broken, short and bad-CRC frames
  are counted in ``bad_frames`` and answered ``BAD_CRC``.
- A failing frame is answered only when at least 3 header bytes were decoded; the reply's sequence number
  and opcode are decoded bytes 1 and 2 (which may be corrupt). With fewer, it is counted and not answered.
  A complete frame's last two decoded bytes are its CRC and do not count (a bad-CRC frame of 3 or 4 decoded
  bytes is not answered); a truncated frame's decoded bytes all count. An oversize frame has always decoded
  more than 3 bytes, so it is always answered.
- A good frame whose body is shorter than the 3-byte header is counted in ``bad_frames``, not answered.

For frames within the limits this agrees with :func:`~poise.firmware.framing.unpack_frame` (same body, same
accept/refuse decision); unlike it, a frame of at most ``MAX_FRAME`` encoded bytes that decodes to more than
``max_body + 2`` bytes is oversize here.

Choices where docs/PROTOCOL.md leaves room:

- Rule 3 compares only the sequence number and the opcode (bytes 1 and 2), before any check of rule 4, so a
  request of another version that repeats them gets the stored reply. A repeated request is not counted
  again in ``refused``. RESET keeps the stored reply (a retried RESET is answered, not executed again).
- The generic payload-length check covers the fixed fields only: INFO, STATUS, RESET 0 bytes; SET 6;
  READ_WEIGHTS 8; LOAD_WEIGHTS the 6-byte address, at least one value and a whole number of values (so a
  LOAD with k = 0 is ``BAD_LENGTH``); INFER at least 1, TRAIN at least 3. The image comes after the
  opcode's field checks: TRAIN checks label, flags and whether the build can learn (``OUT_OF_RANGE``), then
  the encoding: RAW of the wrong size ``BAD_LENGTH``, an unknown encoding or a PACKED image that does not
  decode to n₀ pixels ``BAD_ENCODING``.
- Addresses: ``row`` < rows and ``col`` < columns (row 0 and col < n_{l+1} for biases); the run of k values
  must end inside the matrix.
- A bundle without learning constants (``fixed.eta`` None) makes a device that refuses TRAIN and SET
  LR_SHIFT with ``OUT_OF_RANGE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from poise.errors import PoiseError
from poise.firmware.framing import DELIMITER, MAX_BODY, crc16, max_frame, pack_frame
from poise.firmware.images import EncodingError, decode_image
from poise.firmware.messages import (
    ACCESS,
    INPUT_MODES,
    LOADED,
    MAX_READ,
    READ,
    SETTING,
    TRAIN_HEAD,
    WIRE_BITS,
    ImageResult,
    Info,
    Parameter,
    Status,
    Target,
)
from poise.firmware.protocol import (
    HEADER,
    PROTOCOL_VERSION,
    REPLY,
    ErrorCode,
    Opcode,
    encode_packet,
    error_payload,
)
from poise.golden.bundle import Bundle
from poise.golden.fixed import FixedFormat, Lfsr
from poise.golden.integer import MAX_LR_SHIFT, IntegerSpikingModel

COUNTER_MAX = 0xFFFF
"""The 16-bit error counters saturate here."""
IMAGES_MASK = 0xFFFF_FFFF
"""The image count is 32 bits and wraps."""


@dataclass(frozen=True)
class Reception:
    """What the receiver made of one frame (see the module docstring): ``fault`` None for a frame that
    passed COBS, length and CRC, else ``BAD_CRC`` (broken COBS, short, bad CRC) or ``FRAME_TOO_LONG``;
    ``decoded`` is the body of a good frame, else the bytes the streaming decoder wrote (for an oversize
    frame, its first ``max_body + 2``)."""

    fault: ErrorCode | None
    decoded: bytes


def receive_frame(frame: bytes, max_body: int = MAX_BODY) -> Reception:
    """Decode one non-empty frame (its bytes between two delimiters) as the device's streaming receiver does,
    block by block (equivalent to byte by byte; see the module docstring)."""
    if not frame or DELIMITER in frame:
        raise ValueError("a frame is the non-empty run of bytes between two delimiters")
    limit = max_body + 2
    out = bytearray()
    index, previous = 0, None  # previous: the code of the block before, whose implied 0x00 is pending
    while index < len(frame):
        code = frame[index]
        if previous is not None and previous != 255:
            out.append(0)  # written when the next code byte arrives
        out += frame[index + 1:index + code]  # the data bytes present (fewer if the block is cut off)
        if len(out) > limit:
            return Reception(ErrorCode.FRAME_TOO_LONG, bytes(out[:limit]))
        previous, index = code, index + code
    if len(frame) > max_frame(max_body):  # unreachable: implied by the decoded limit (module docstring)
        return Reception(ErrorCode.FRAME_TOO_LONG, bytes(out[:limit]))
    if index > len(frame) or len(out) < 2:  # broken COBS (incomplete last block), or shorter than a CRC
        return Reception(ErrorCode.BAD_CRC, bytes(out))
    body = bytes(out[:-2])
    if crc16(body) != out[-2] | out[-1] << 8:  # a complete frame: its last two bytes were the CRC
        return Reception(ErrorCode.BAD_CRC, body)
    return Reception(None, body)


class ReferenceDevice:
    """The device of docs/PROTOCOL.md on an :class:`IntegerSpikingModel` of ``bundle``.

    :meth:`feed` takes bytes arriving on the UART and returns every complete reply frame they cause; a
    partial frame waits for the next call. ``lanes``, ``clock_hz`` and ``baud`` are only reported by INFO (the
    reference does not model time: ``cycles`` and ``synapse_cycles`` of image results are 0); ``max_body`` is
    the largest request body the receiver accepts. UART framing, parity and overrun errors cannot occur here
    and read 0 in STATUS.
    """

    def __init__(self, bundle: Bundle, lanes: int = 8, clock_hz: int = 24_000_000, baud: int = 3_000_000,
                 max_body: int = MAX_BODY) -> None:
        fixed = bundle.fixed
        if fixed is None:
            raise PoiseError("the reference device needs a bundle with a fixed-point spec (poise quantize)")
        too_wide = [name for name, fmt in (("weight", fixed.weight), ("bias", fixed.bias), ("state", fixed.state))
                    if fmt.width > WIRE_BITS]
        if too_wide:
            raise PoiseError(f"the protocol carries {', '.join(too_wide)} values as int16, but the spec's "
                             f"formats are wider")
        if not (1 <= lanes <= 0xFF and 0 < clock_hz <= 0xFFFF_FFFF and 0 < baud <= 0xFFFF_FFFF
                and HEADER.size <= max_body <= MAX_BODY):
            raise PoiseError(f"lanes {lanes} (1-255), clock {clock_hz} Hz, baud {baud} (u32) or largest body "
                             f"{max_body} ({HEADER.size}-{MAX_BODY}) out of range")
        spec = bundle.spec
        self._model = IntegerSpikingModel.from_bundle(bundle)
        self.can_learn = fixed.eta is not None
        """Whether the build has learning constants (else TRAIN and SET LR_SHIFT are refused)."""
        self.max_body = max_body
        self.info = Info.describe(spec, fixed, lanes, clock_hz, baud, max_body)
        if self.info.input_mode not in INPUT_MODES:
            raise PoiseError(f"input mode {self.info.input_mode!r} has no protocol code")
        # the receiver: the current frame's first max_frame + 1 encoded bytes (more cannot matter: the frame
        # is oversize by then and its header is in them)
        self._frame = bytearray()
        # error counters (since power-up, saturating) and the state RESET restores
        self.bad_frames = self.long_frames = self.refused = 0
        self.images = 0
        self.learn = True
        self._stored: tuple[int, int, bytes] | None = None  # (sequence, opcode, reply frame) of rule 3

    @property
    def model(self) -> IntegerSpikingModel:
        """The integer model the device computes with (its weights and biases are the device's)."""
        return self._model

    @property
    def status(self) -> Status:
        """What STATUS would answer now."""
        return Status(0, 0, 0, self.bad_frames, self.long_frames, self.refused, self.images, int(self.learn))

    # -- receiving -------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        """The reply frames to the frames that ``data`` completes, concatenated in order."""
        replies = bytearray()
        keep = max_frame(self.max_body) + 1
        for byte in bytes(data):
            if byte != DELIMITER:
                if len(self._frame) < keep:
                    self._frame.append(byte)
                continue
            frame = bytes(self._frame)
            self._frame.clear()
            if frame:  # two delimiters in a row are nothing
                replies += self._frame_received(frame)
        return bytes(replies)

    def _frame_received(self, frame: bytes) -> bytes:
        """Rules 1-4 for one frame: the reply frame, or b"" when there is none."""
        reception = receive_frame(frame, self.max_body)
        if reception.fault is not None:  # rule 1: counted; answered (not stored) if the header decoded
            if reception.fault == ErrorCode.FRAME_TOO_LONG:
                self.long_frames = min(self.long_frames + 1, COUNTER_MAX)
            else:
                self.bad_frames = min(self.bad_frames + 1, COUNTER_MAX)
            head = reception.decoded
            if len(head) < HEADER.size:
                return b""
            return pack_frame(encode_packet(head[1], Opcode.ERROR, error_payload(reception.fault, head[2])))
        body = reception.decoded
        if len(body) < HEADER.size:  # rule 2
            self.bad_frames = min(self.bad_frames + 1, COUNTER_MAX)
            return b""
        version, sequence, opcode = HEADER.unpack_from(body)
        if self._stored is not None and self._stored[:2] == (sequence, opcode):  # rule 3
            return self._stored[2]
        try:  # rule 4
            if version != PROTOCOL_VERSION:
                raise _RefusedError(ErrorCode.BAD_VERSION)
            reply = pack_frame(encode_packet(sequence, opcode | REPLY, self._execute(opcode, body[HEADER.size:])))
        except _RefusedError as refusal:
            self.refused = min(self.refused + 1, COUNTER_MAX)
            reply = pack_frame(encode_packet(sequence, Opcode.ERROR, error_payload(refusal.code, opcode)))
        self._stored = (sequence, opcode, reply)
        return reply

    # -- commands --------------------------------------------------------------------------------------
    def _execute(self, opcode: int, payload: bytes) -> bytes:
        """Check and execute one request of the right version: its reply payload, or :class:`_RefusedError`
        (raised before anything changed)."""
        handlers: dict[int, Callable[[bytes], bytes]] = {
            Opcode.INFO: self._info, Opcode.LOAD_WEIGHTS: self._load, Opcode.READ_WEIGHTS: self._read,
            Opcode.INFER: self._infer, Opcode.TRAIN: self._train, Opcode.SET: self._set,
            Opcode.RESET: self._reset, Opcode.STATUS: self._status}
        handler = handlers.get(opcode)
        if handler is None:  # 0x00, 0x09…, ERROR and every reply opcode
            raise _RefusedError(ErrorCode.UNKNOWN_OPCODE)
        return handler(payload)

    def _info(self, payload: bytes) -> bytes:
        _length(not payload)
        return self.info.encode()

    def _status(self, payload: bytes) -> bytes:
        _length(not payload)
        return self.status.encode()

    def _reset(self, payload: bytes) -> bytes:
        """Learning on, learning-rate shift 0, the LFSR at its power-up state, image count 0; weights, biases,
        error counters and the stored reply are kept."""
        _length(not payload)
        model = self._model
        self.learn, self.images = True, 0
        model.lr_shift = 0
        model.lfsr = Lfsr(max(model.fixed.guard, 1))  # as IntegerSpikingModel.__init__ creates it
        return b""

    def _set(self, payload: bytes) -> bytes:
        _length(len(payload) == SETTING.size)
        parameter, index, value = SETTING.unpack(payload)
        if parameter == Parameter.LEARN and index == 0 and value in (0, 1):
            self.learn = bool(value)
        elif parameter == Parameter.LR_SHIFT and index == 0 and 0 <= value <= MAX_LR_SHIFT and self.can_learn:
            self._model.lr_shift = value  # read by every increment train_image forms
        else:
            raise _RefusedError(ErrorCode.OUT_OF_RANGE)
        return payload

    def _span(self, target: int, layer: int, row: int, col: int, count: int) -> tuple[np.ndarray, FixedFormat, int]:
        """The parameter array (as a flat view) a run addresses, its format and the run's first flat index;
        OUT_OF_RANGE unless target and layer exist, (row, col) lies inside and the run ends inside."""
        if target not in (Target.WEIGHTS, Target.BIASES) or layer >= len(self._model.weights):
            raise _RefusedError(ErrorCode.OUT_OF_RANGE)
        if target == Target.WEIGHTS:
            array, fmt = self._model.weights[layer], self._model.fixed.weight
            rows, cols = array.shape
        else:
            array, fmt = self._model.biases[layer], self._model.fixed.bias
            rows, cols = 1, len(array)
        start = row * cols + col
        if row >= rows or col >= cols or count < 1 or start + count > rows * cols:
            raise _RefusedError(ErrorCode.OUT_OF_RANGE)
        return array.reshape(-1), fmt, start

    def _load(self, payload: bytes) -> bytes:
        """Write k values after checking the whole request; keeps the model's float copy of W in step."""
        _length(len(payload) >= ACCESS.size + 2 and (len(payload) - ACCESS.size) % 2 == 0)
        target, layer, row, col = ACCESS.unpack_from(payload)
        values = np.frombuffer(payload, "<i2", offset=ACCESS.size).astype(np.int64)
        flat, fmt, start = self._span(target, layer, row, col, len(values))
        if not fmt.contains(values).all():
            raise _RefusedError(ErrorCode.OUT_OF_RANGE)
        flat[start:start + len(values)] = values  # a view: writes the model's array in place
        if target == Target.WEIGHTS:
            self._model.weights_f64[layer] = self._model.weights[layer].astype(np.float64)
        return LOADED.pack(target, layer, row, col, len(values))

    def _read(self, payload: bytes) -> bytes:
        _length(len(payload) == READ.size)
        target, layer, row, col, count = READ.unpack(payload)
        if count > MAX_READ:
            raise _RefusedError(ErrorCode.OUT_OF_RANGE)
        flat, _, start = self._span(target, layer, row, col, count)
        return flat[start:start + count].astype("<i2").tobytes()

    def _image(self, encoding: int, image: bytes) -> np.ndarray:
        """The decoded image: RAW of the wrong size BAD_LENGTH, anything undecodable BAD_ENCODING."""
        try:
            return decode_image(image, encoding, self.info.sizes[0])
        except EncodingError as error:
            raise _RefusedError(error.code) from None

    def _result(self, pixels: np.ndarray) -> ImageResult:
        """The free phase of one image, as INFER answers it (cycles not modelled: 0)."""
        result = self._model.infer(pixels[np.newaxis])
        outputs = tuple(int(v) for v in result.outputs[0])
        return ImageResult(int(result.predictions[0]), int(result.spikes[0]), int(result.synops[0]), 0, 0, outputs)

    def _infer(self, payload: bytes) -> bytes:
        _length(len(payload) >= 1)
        pixels = self._image(payload[0], payload[1:])
        result = self._result(pixels)
        self.images = (self.images + 1) & IMAGES_MASK
        return result.encode()

    def _train(self, payload: bytes) -> bytes:
        """The free-phase result; with learning on, the weights and biases then learn from the image (with
        it off nothing changes: the nudged phase's writes are suppressed and the LFSR does not advance)."""
        head = TRAIN_HEAD.size
        _length(len(payload) >= head)
        label, flags, encoding = TRAIN_HEAD.unpack_from(payload)
        if label >= self.info.sizes[-1] or flags & ~1 or not self.can_learn:
            raise _RefusedError(ErrorCode.OUT_OF_RANGE)
        pixels = self._image(encoding, payload[head:])
        result = self._result(pixels)
        if self.learn:
            prediction = self._model.train_image(pixels, label, -1 if flags & 1 else 1)
            assert prediction == result.prediction, "train_image's free phase differs from infer's"
        self.images = (self.images + 1) & IMAGES_MASK
        return result.encode()


class _RefusedError(Exception):
    """A request refused under rule 4 with ``code``; nothing was changed."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code


def _length(ok: bool) -> None:
    if not ok:
        raise _RefusedError(ErrorCode.BAD_LENGTH)


