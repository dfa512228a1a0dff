"""The reference device (docs/PROTOCOL.md in Python) against an independent integer golden model: every
command, every error code, the failed-frame and repeated-request rules, and a garbage stream."""

import collections
import dataclasses
import struct

import numpy as np
import pytest

from poise.embedded import embedded_bundle
from poise.firmware.framing import (
    DELIMITER,
    MAX_BODY,
    MAX_FRAME,
    FrameError,
    FrameSplitter,
    cobs_encode,
    crc16,
    max_frame,
    pack_frame,
    unpack_frame,
)
from poise.firmware.images import encode_image
from poise.firmware.messages import (
    MAX_READ,
    Access,
    Encoding,
    ImageResult,
    Info,
    Parameter,
    Status,
    Target,
    decode_loaded,
    decode_values,
    infer_request,
    load_request,
    read_request,
    set_request,
    train_request,
)
from poise.firmware.protocol import PROTOCOL_VERSION, REPLY, ErrorCode, Opcode, Packet, decode_packet, encode_packet
from poise.firmware.reference import ReferenceDevice, receive_frame
from poise.golden.bundle import load_bundle, spec_sha256
from poise.golden.integer import MAX_LR_SHIFT, IntegerSpikingModel

BUNDLE = load_bundle(embedded_bundle())
N_IN, CLASSES = BUNDLE.spec.layers[0], BUNDLE.spec.layers[-1]
LOAD_CHUNK = (MAX_BODY - 3 - 6) // 2  # values per LOAD_WEIGHTS request
# Test images the bundle misclassifies: training on a confidently right one changes nothing (its one-hot
# output already equals the target), and β < 0 on a saturated output neither. These change weights either way.
LEARNING_IMAGES = (8, 149, 151, 115)


@pytest.fixture
def device() -> ReferenceDevice:
    return ReferenceDevice(BUNDLE)


def frame(sequence: int, opcode: int, payload: bytes = b"", version: int = PROTOCOL_VERSION) -> bytes:
    body = bytes((version,)) + encode_packet(sequence, opcode, payload)[1:]
    return pack_frame(body)


def raw_frame(packet: bytes) -> bytes:
    """A frame of ``packet`` (body and CRC as given), COBS-encoded, with its delimiter."""
    return cobs_encode(packet) + bytes((DELIMITER,))


def with_crc(body: bytes) -> bytes:
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def replies(data: bytes) -> list[Packet]:
    """Every reply frame in ``data``, decoded (each must be a good frame)."""
    splitter = FrameSplitter()
    packets = [decode_packet(unpack_frame(f)) for f in splitter.feed(data)]
    assert not splitter.buffer, "a reply frame was cut off"
    return packets


def ask(device: ReferenceDevice, sequence: int, opcode: int, payload: bytes = b"") -> bytes:
    """The payload of the successful reply to one request."""
    [reply] = replies(device.feed(frame(sequence, opcode, payload)))
    assert reply.sequence == sequence, reply
    assert reply.opcode == opcode | REPLY, f"refused: {reply.payload.hex()}"
    return reply.payload


def refused(device: ReferenceDevice, data: bytes) -> tuple[int, ErrorCode, int]:
    """(sequence, error code, opcode answered) of the one error reply ``data`` gets."""
    [reply] = replies(device.feed(data))
    assert reply.opcode == Opcode.ERROR and len(reply.payload) == 2, reply
    return reply.sequence, ErrorCode(reply.payload[0]), reply.payload[1]


def status(device: ReferenceDevice, sequence: int = 250) -> Status:
    return Status.decode(ask(device, sequence, Opcode.STATUS))


def parameters(device: ReferenceDevice, sequence: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every weight and bias, read back through READ_WEIGHTS."""
    out = []
    for target, arrays in ((Target.WEIGHTS, BUNDLE_SHAPES[0]), (Target.BIASES, BUNDLE_SHAPES[1])):
        layers = []
        for layer, shape in enumerate(arrays):
            total, values = int(np.prod(shape)), []
            for start in range(0, total, MAX_READ):
                count = min(MAX_READ, total - start)
                row, col = divmod(start, shape[-1])
                sequence = (sequence + 1) % 256
                values.append(decode_values(ask(device, sequence, Opcode.READ_WEIGHTS,
                                                read_request(Access(target, layer, row, col), count))))
            layers.append(np.concatenate(values).reshape(shape))
        out.append(layers)
    return out[0], out[1]


def load(device: ReferenceDevice, weights: list[np.ndarray], biases: list[np.ndarray], sequence: int = 100) -> int:
    """Write every weight and bias with LOAD_WEIGHTS; returns the next free sequence number."""
    for target, arrays in ((Target.WEIGHTS, weights), (Target.BIASES, biases)):
        for layer, array in enumerate(arrays):
            flat = array.reshape(-1)
            for start in range(0, len(flat), LOAD_CHUNK):
                chunk = flat[start:start + LOAD_CHUNK]
                row, col = divmod(start, array.shape[-1])
                access = Access(target, layer, row, col)
                sequence = (sequence + 1) % 256
                reply = ask(device, sequence, Opcode.LOAD_WEIGHTS, load_request(access, chunk))
                assert decode_loaded(reply) == (access, len(chunk))
    return (sequence + 1) % 256


_MODEL = IntegerSpikingModel.from_bundle(BUNDLE)
BUNDLE_SHAPES = ([w.shape for w in _MODEL.weights], [b.shape for b in _MODEL.biases])


def same_parameters(device: ReferenceDevice, model: IntegerSpikingModel) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(device.model.weights + device.model.biases,
                                                    model.weights + model.biases, strict=True))


def expected_result(model: IntegerSpikingModel, pixels: np.ndarray) -> ImageResult:
    result = model.infer(pixels[np.newaxis])
    return ImageResult(int(result.predictions[0]), int(result.spikes[0]), int(result.synops[0]), 0, 0,
                       tuple(int(v) for v in result.outputs[0]))


# -- commands ---------------------------------------------------------------------------------------------
def test_info_reports_the_bundle(device):
    info = Info.decode(ask(device, 1, Opcode.INFO))
    fixed, spec = BUNDLE.fixed, BUNDLE.spec
    assert info == Info(PROTOCOL_VERSION, bytes.fromhex(spec_sha256(spec, fixed))[:8], "current", 8, (784, 128, 10),
                        fixed.weight.width, fixed.bias.width, fixed.state.width, spec.steps_free, spec.steps_nudge,
                        24_000_000, 3_000_000, MAX_BODY)
    custom = ReferenceDevice(BUNDLE, lanes=4, clock_hz=12_000_000, baud=115_200, max_body=1000)
    info = Info.decode(ask(custom, 1, Opcode.INFO))
    assert (info.lanes, info.clock_hz, info.baud, info.max_body) == (4, 12_000_000, 115_200, 1000)
    assert status(device) == Status(0, 0, 0, 0, 0, 0, 0, 1)


@pytest.mark.parametrize("encoding", [Encoding.RAW, Encoding.PACKED])
def test_infer_matches_the_golden_model(device, mnist, encoding):
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    for index in range(5):
        pixels = mnist.test_images[index]
        payload = ask(device, index, Opcode.INFER, infer_request(encoding, encode_image(pixels, encoding)))
        assert ImageResult.decode(payload, CLASSES) == expected_result(model, pixels)
    assert status(device).images == 5
    assert same_parameters(device, model)


def test_train_learns_as_the_golden_model(device, mnist):
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    for sequence, (index, sign) in enumerate(zip(LEARNING_IMAGES, (1, -1, 1), strict=False)):
        pixels, label = mnist.test_images[index], int(mnist.test_labels[index])
        expected = expected_result(model, pixels)  # the free phase before the update
        payload = ask(device, sequence, Opcode.TRAIN,
                      train_request(label, sign < 0, Encoding.PACKED, encode_image(pixels, Encoding.PACKED)))
        assert ImageResult.decode(payload, CLASSES) == expected
        before = [w.copy() for w in model.weights + model.biases]
        model.train_image(pixels, label, sign)
        assert same_parameters(device, model)
        assert all(not np.array_equal(a, b) for a, b in zip(model.weights + model.biases, before, strict=True))
    assert status(device).images == 3


def test_learn_off_changes_nothing_and_keeps_the_random_generator(device, mnist):
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    pixels, label = mnist.test_images[LEARNING_IMAGES[0]], int(mnist.test_labels[LEARNING_IMAGES[0]])
    request = train_request(label, False, Encoding.RAW, encode_image(pixels, Encoding.RAW))
    assert ask(device, 1, Opcode.SET, set_request(Parameter.LEARN, 0, 0)) == set_request(Parameter.LEARN, 0, 0)
    assert status(device).learn == 0
    assert ImageResult.decode(ask(device, 2, Opcode.TRAIN, request), CLASSES) == expected_result(model, pixels)
    assert same_parameters(device, model)
    ask(device, 3, Opcode.SET, set_request(Parameter.LEARN, 0, 1))
    ask(device, 4, Opcode.TRAIN, request)  # learns as the first image a fresh model sees: the LFSR did not move
    model.train_image(pixels, label, 1)
    assert same_parameters(device, model)
    assert status(device) == Status(0, 0, 0, 0, 0, 0, 2, 1)


def test_set_lr_shift_scales_the_learning_rates(device, mnist):
    payload = set_request(Parameter.LR_SHIFT, 0, 4)
    assert ask(device, 1, Opcode.SET, payload) == payload
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    model.lr_shift = 4
    default = IntegerSpikingModel.from_bundle(BUNDLE)
    for sequence, (index, sign) in enumerate(zip(LEARNING_IMAGES[1:3], (1, -1), strict=True)):
        pixels, label = mnist.test_images[index], int(mnist.test_labels[index])
        ask(device, 10 + sequence, Opcode.TRAIN, train_request(label, sign < 0, Encoding.RAW, pixels.tobytes()))
        model.train_image(pixels, label, sign)
        default.train_image(pixels, label, sign)
    assert same_parameters(device, model)
    assert not same_parameters(device, default)


def test_reset_restores_learning_and_the_random_generator_but_keeps_the_weights(device, mnist):
    original = IntegerSpikingModel.from_bundle(BUNDLE)
    pixels, label = mnist.test_images[LEARNING_IMAGES[0]], int(mnist.test_labels[LEARNING_IMAGES[0]])
    request = train_request(label, False, Encoding.PACKED, encode_image(pixels, Encoding.PACKED))
    first = ask(device, 1, Opcode.TRAIN, request)
    learned = [w.copy() for w in device.model.weights + device.model.biases]
    # from the same weights without a RESET the LFSR continues, so the same image learns differently
    sequence = load(device, original.weights, original.biases, sequence=1)
    assert same_parameters(device, original)
    ask(device, sequence, Opcode.TRAIN, request)
    assert not all(np.array_equal(a, b) for a, b in zip(device.model.weights + device.model.biases, learned,
                                                        strict=True))
    sequence = load(device, original.weights, original.biases, sequence=sequence)
    ask(device, sequence, Opcode.SET, set_request(Parameter.LEARN, 0, 0))
    ask(device, sequence + 1, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, MAX_LR_SHIFT))
    assert ask(device, sequence + 2, Opcode.RESET) == b""
    after = status(device)
    assert (after.images, after.learn, device.model.lr_shift) == (0, 1, 0)
    assert same_parameters(device, original)  # RESET keeps the weights
    assert ask(device, sequence + 3, Opcode.TRAIN, request) == first
    assert all(np.array_equal(a, b) for a, b in zip(device.model.weights + device.model.biases, learned, strict=True))


def test_load_and_read_round_trip(device, mnist):
    rng = np.random.default_rng(3)
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    fmt_w, fmt_b = BUNDLE.fixed.weight, BUNDLE.fixed.bias
    runs = [(Target.WEIGHTS, 0, 5, 100, 300), (Target.WEIGHTS, 1, 127, 0, 10), (Target.WEIGHTS, 0, 783, 127, 1),
            (Target.BIASES, 0, 0, 3, 125), (Target.BIASES, 1, 0, 0, 10)]
    for sequence, (target, layer, row, col, count) in enumerate(runs):
        fmt = fmt_w if target == Target.WEIGHTS else fmt_b
        values = rng.integers(fmt.min_raw, fmt.max_raw + 1, count)
        values[0], values[-1] = fmt.min_raw, fmt.max_raw
        access = Access(target, layer, row, col)
        reply = ask(device, 2 * sequence, Opcode.LOAD_WEIGHTS, load_request(access, values))
        assert decode_loaded(reply) == (access, count)
        read = ask(device, 2 * sequence + 1, Opcode.READ_WEIGHTS, read_request(access, count))
        assert np.array_equal(decode_values(read), values)
        array = (model.weights if target == Target.WEIGHTS else model.biases)[layer]
        start = row * array.shape[-1] + col
        array.reshape(-1)[start:start + count] = values
    assert same_parameters(device, model)
    model.weights_f64 = [w.astype(np.float64) for w in model.weights]
    pixels = mnist.test_images[7]
    payload = ask(device, 20, Opcode.INFER, infer_request(Encoding.RAW, pixels.tobytes()))
    assert ImageResult.decode(payload, CLASSES) == expected_result(model, pixels)  # the loaded weights compute
    weights, biases = parameters(device, sequence=30)
    assert all(np.array_equal(a, b) for a, b in zip(weights + biases, model.weights + model.biases, strict=True))


def test_a_load_with_one_value_out_of_format_writes_nothing(device):
    before = [w.copy() for w in device.model.weights + device.model.biases]
    formats = ((Target.WEIGHTS, BUNDLE.fixed.weight), (Target.BIASES, BUNDLE.fixed.bias))
    cases = [(target, bad) for target, fmt in formats for bad in (fmt.max_raw + 1, fmt.min_raw - 1)]
    for sequence, (target, bad) in enumerate(cases):
        values = np.zeros(10, np.int64)
        values[-1] = bad
        request = load_request(Access(target, 0, 0, 0), values)
        assert refused(device, frame(sequence, Opcode.LOAD_WEIGHTS, request)) == (
            sequence, ErrorCode.OUT_OF_RANGE, Opcode.LOAD_WEIGHTS)
    assert all(np.array_equal(a, b) for a, b in zip(device.model.weights + device.model.biases, before, strict=True))
    assert status(device).refused == 4


# -- refused requests (rule 4) -----------------------------------------------------------------------------
def _access(target: int, layer: int, row: int, col: int) -> bytes:
    return struct.pack("<BBHH", target, layer, row, col)


def _read(target: int, layer: int, row: int, col: int, count: int) -> bytes:
    return struct.pack("<BBHHH", target, layer, row, col, count)


RAW_IMAGE = bytes(range(1, 256)) * 3 + bytes(19)
ONE_VALUE = struct.pack("<h", 1)
REFUSALS = [  # (version, opcode, payload, error)
    (0, Opcode.INFO, b"", ErrorCode.BAD_VERSION),
    (2, 0x55, b"anything", ErrorCode.BAD_VERSION),  # the version is checked first
    (1, 0x00, b"", ErrorCode.UNKNOWN_OPCODE),
    (1, 0x09, b"", ErrorCode.UNKNOWN_OPCODE),
    (1, Opcode.ERROR, bytes((1, 1)), ErrorCode.UNKNOWN_OPCODE),
    (1, Opcode.INFO | REPLY, b"", ErrorCode.UNKNOWN_OPCODE),
    (1, 0xFF, b"\x01" * 9, ErrorCode.UNKNOWN_OPCODE),  # before any length
    (1, Opcode.INFO, b"\x00", ErrorCode.BAD_LENGTH),
    (1, Opcode.STATUS, b"\x01", ErrorCode.BAD_LENGTH),
    (1, Opcode.RESET, b"\x00", ErrorCode.BAD_LENGTH),
    (1, Opcode.READ_WEIGHTS, _read(0, 0, 0, 0, 1)[:-1], ErrorCode.BAD_LENGTH),
    (1, Opcode.READ_WEIGHTS, _read(0, 0, 0, 0, 1) + b"\x00", ErrorCode.BAD_LENGTH),
    (1, Opcode.LOAD_WEIGHTS, _access(0, 0, 0, 0)[:-1], ErrorCode.BAD_LENGTH),
    (1, Opcode.LOAD_WEIGHTS, _access(0, 0, 0, 0) + b"\x01\x00\x01", ErrorCode.BAD_LENGTH),
    (1, Opcode.LOAD_WEIGHTS, _access(9, 9, 9999, 9999) + b"\x01", ErrorCode.BAD_LENGTH),  # length before range
    (1, Opcode.LOAD_WEIGHTS, _access(0, 0, 0, 0), ErrorCode.BAD_LENGTH),  # k = 0: no value
    (1, Opcode.INFER, b"", ErrorCode.BAD_LENGTH),
    (1, Opcode.INFER, bytes((Encoding.RAW,)) + RAW_IMAGE[:-1], ErrorCode.BAD_LENGTH),
    (1, Opcode.INFER, bytes((Encoding.RAW,)) + RAW_IMAGE + b"\x01", ErrorCode.BAD_LENGTH),
    (1, Opcode.TRAIN, bytes((0, 0)), ErrorCode.BAD_LENGTH),
    (1, Opcode.TRAIN, bytes((0, 0, Encoding.RAW)) + RAW_IMAGE[:-1], ErrorCode.BAD_LENGTH),
    (1, Opcode.TRAIN, bytes((0, 1, Encoding.RAW)) + RAW_IMAGE + b"\x01", ErrorCode.BAD_LENGTH),
    (1, Opcode.SET, set_request(Parameter.LEARN, 0, 1)[:-1], ErrorCode.BAD_LENGTH),
    (1, Opcode.SET, set_request(Parameter.LEARN, 0, 1) + b"\x00", ErrorCode.BAD_LENGTH),
    (1, Opcode.LOAD_WEIGHTS, _access(2, 0, 0, 0) + ONE_VALUE, ErrorCode.OUT_OF_RANGE),
    (1, Opcode.LOAD_WEIGHTS, _access(0, 2, 0, 0) + ONE_VALUE, ErrorCode.OUT_OF_RANGE),
    (1, Opcode.LOAD_WEIGHTS, _access(0, 0, 784, 0) + ONE_VALUE, ErrorCode.OUT_OF_RANGE),
    (1, Opcode.LOAD_WEIGHTS, _access(0, 0, 0, 128) + ONE_VALUE, ErrorCode.OUT_OF_RANGE),
    (1, Opcode.LOAD_WEIGHTS, _access(0, 1, 127, 9) + ONE_VALUE * 2, ErrorCode.OUT_OF_RANGE),  # leaves W_1
    (1, Opcode.LOAD_WEIGHTS, _access(1, 0, 1, 0) + ONE_VALUE, ErrorCode.OUT_OF_RANGE),  # biases have row 0 only
    (1, Opcode.LOAD_WEIGHTS, _access(1, 1, 0, 9) + ONE_VALUE * 2, ErrorCode.OUT_OF_RANGE),
    (1, Opcode.LOAD_WEIGHTS, _access(1, 0, 0, 0) + struct.pack("<h", -129), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.READ_WEIGHTS, _read(0, 0, 0, 0, 0), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.READ_WEIGHTS, _read(0, 0, 0, 0, MAX_READ + 1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.READ_WEIGHTS, _read(0, 1, 127, 0, 11), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.READ_WEIGHTS, _read(1, 1, 0, 10, 1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.READ_WEIGHTS, _read(1, 2, 0, 0, 1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.TRAIN, bytes((CLASSES, 0, Encoding.RAW)) + RAW_IMAGE, ErrorCode.OUT_OF_RANGE),
    (1, Opcode.TRAIN, bytes((0, 2, Encoding.RAW)) + RAW_IMAGE, ErrorCode.OUT_OF_RANGE),
    (1, Opcode.TRAIN, bytes((0, 0x81, 7)) + b"\x01", ErrorCode.OUT_OF_RANGE),  # label and flags before the image
    (1, Opcode.TRAIN, bytes((CLASSES, 0, Encoding.RAW)) + RAW_IMAGE[:-1], ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, set_request(Parameter.LEARN, 1, 1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, set_request(Parameter.LEARN, 0, 2), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, set_request(Parameter.LEARN, 0, -1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, bytes((0, 0)) + struct.pack("<i", 0), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, bytes((3, 0)) + struct.pack("<i", 0), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, set_request(Parameter.LR_SHIFT, 1, 1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, -1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, MAX_LR_SHIFT + 1), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, 1 << 24), ErrorCode.OUT_OF_RANGE),
    (1, Opcode.INFER, bytes((2,)) + RAW_IMAGE, ErrorCode.BAD_ENCODING),
    (1, Opcode.INFER, bytes((Encoding.PACKED, 0, 255, 0, 255, 0, 255)), ErrorCode.BAD_ENCODING),  # too few
    (1, Opcode.INFER, bytes((Encoding.PACKED, 0, 255, 0, 255, 0, 255, 0, 20)), ErrorCode.BAD_ENCODING),  # too many
    (1, Opcode.INFER, bytes((Encoding.PACKED, 0, 255, 0, 255, 0, 255, 0, 0, 0, 19)), ErrorCode.BAD_ENCODING),
    (1, Opcode.INFER, bytes((Encoding.PACKED, 0, 255, 0, 255, 0, 255, *[7] * 18, 0)), ErrorCode.BAD_ENCODING),
    (1, Opcode.TRAIN, bytes((0, 1, Encoding.PACKED)) + RAW_IMAGE, ErrorCode.BAD_ENCODING),
]


def test_every_refusal_is_answered_with_its_error_and_changes_nothing(device):
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    for sequence, (version, opcode, payload, error) in enumerate(REFUSALS):
        answer = refused(device, frame(sequence, opcode, payload, version))
        assert answer == (sequence, error, opcode), (sequence, version, opcode, payload[:12].hex(), error)
    assert same_parameters(device, model)
    assert status(device) == Status(0, 0, 0, 0, 0, len(REFUSALS), 0, 1)
    assert {error for *_, error in REFUSALS} | {ErrorCode.BAD_CRC, ErrorCode.FRAME_TOO_LONG, ErrorCode.BUSY} == set(
        ErrorCode)


# -- failed frames (rules 1 and 2) -------------------------------------------------------------------------
def test_a_bit_error_is_answered_bad_crc_with_the_header_it_read(device):
    packet = bytearray(with_crc(encode_packet(42, Opcode.READ_WEIGHTS, _read(0, 0, 0, 0, 4))))
    packet[6] ^= 0x10  # in the payload: the header stays readable
    assert refused(device, raw_frame(bytes(packet))) == (42, ErrorCode.BAD_CRC, Opcode.READ_WEIGHTS)
    packet = bytearray(with_crc(encode_packet(42, Opcode.INFO)))
    packet[2] ^= 0x04  # in the opcode: answered with the corrupt opcode
    assert refused(device, raw_frame(bytes(packet))) == (42, ErrorCode.BAD_CRC, Opcode.INFO ^ 0x04)
    packet[2] ^= 0x04
    packet[-1] ^= 0x80  # in the CRC
    assert refused(device, raw_frame(bytes(packet))) == (42, ErrorCode.BAD_CRC, Opcode.INFO)
    assert status(device) == Status(0, 0, 0, 3, 0, 0, 0, 1)


def test_an_oversize_frame_is_answered_frame_too_long(device):
    body = encode_packet(9, Opcode.INFER, infer_request(Encoding.RAW, bytes(MAX_BODY)))
    assert refused(device, raw_frame(with_crc(body))) == (9, ErrorCode.FRAME_TOO_LONG, Opcode.INFER)
    small = ReferenceDevice(BUNDLE, max_body=500)
    request = frame(10, Opcode.INFER, infer_request(Encoding.RAW, RAW_IMAGE))
    assert refused(small, request) == (10, ErrorCode.FRAME_TOO_LONG, Opcode.INFER)
    # a body of exactly the limit is received (and refused for its length, as a request); one byte more is not
    exact = frame(11, Opcode.LOAD_WEIGHTS, _access(0, 0, 0, 0) + bytes(500 - 3 - 6 - 1) + b"\x01")
    assert refused(small, exact) == (11, ErrorCode.BAD_LENGTH, Opcode.LOAD_WEIGHTS)
    longer = frame(12, Opcode.LOAD_WEIGHTS, _access(0, 0, 0, 0) + bytes(500 - 3 - 6) + b"\x01")
    assert refused(small, longer) == (12, ErrorCode.FRAME_TOO_LONG, Opcode.LOAD_WEIGHTS)
    # at most MAX_FRAME encoded bytes (FrameSplitter keeps it) but more than MAX_BODY + 2 decoded: oversize
    tricky = bytes((4, 1, 3, 4)) + bytes((1,)) * (MAX_FRAME - 4)  # 01 03 04, then 00 per code byte
    assert len(receive_frame(tricky).decoded) == MAX_BODY + 2
    assert refused(device, tricky + b"\x00") == (3, ErrorCode.FRAME_TOO_LONG, 4)
    assert FrameSplitter().feed(tricky + b"\x00") == [tricky]
    assert status(device).long_frames == 2 and status(small).long_frames == 2


def test_failed_frames_are_answered_only_when_three_header_bytes_decoded(device):
    # broken COBS: the streaming decoder wrote the incomplete block's data and the implied zeros before it
    cases = [
        (b"\x05\x01\x02", None),  # 2 data bytes written, then the delimiter cuts the block: silent
        (b"\x05\x01\x02\x03", (2, 3)),  # 3 written: answered with bytes 1 and 2
        (b"\x02\x07\x05", None),  # 07, then 00 when the next code arrives: 2 bytes
        (b"\x02\x07\x01\x05\xaa", (0, 0)),  # 07 00 00 aa
        (b"\x02\x07\x02\x08\x01", None),  # complete 07 00 08 00: the last two are its CRC, 2 header bytes
        (b"\x02\x07\x04\x08\x09\x0a\x01", (0, 8)),  # complete 07 00 08 09 | 0a 00, a bad CRC: answered
        (b"\x01", None),  # decodes to nothing: shorter than a CRC
        (b"\x02\x07", None),  # one byte
        (b"\xff" + bytes(range(1, 30)), (2, 3)),  # a cut-off 255-block
    ]
    answered = 0
    for encoded, header in cases:
        reply = device.feed(encoded + b"\x00")
        if header is None:
            assert reply == b"", encoded
        else:
            answered += 1
            [packet] = replies(reply)
            assert (packet.sequence, packet.opcode, packet.payload) == (
                header[0], Opcode.ERROR, bytes((ErrorCode.BAD_CRC, header[1]))), encoded
    assert answered == 4
    # rule 2: a good frame whose body is shorter than the header is counted, not answered
    assert device.feed(raw_frame(with_crc(b"\x01\x05"))) == b""
    assert device.feed(raw_frame(with_crc(b""))) == b""
    # two delimiters in a row are nothing
    assert device.feed(b"\x00\x00\x00") == b""
    assert status(device) == Status(0, 0, 0, len(cases) + 2, 0, 0, 0, 1)


def test_a_frame_split_over_many_feeds_is_received_once(device):
    data = frame(5, Opcode.INFO) + frame(6, Opcode.STATUS)
    out = b"".join(device.feed(data[i:i + 1]) for i in range(len(data)))
    assert [p.opcode for p in replies(out)] == [Opcode.INFO | REPLY, Opcode.STATUS | REPLY]


def test_receive_frame_agrees_with_unpack_frame():
    rng = np.random.default_rng(11)
    outcomes: collections.Counter = collections.Counter()
    for n in range(3000):
        length = int(rng.integers(1, 40)) if n % 3 else int(rng.integers(1, MAX_FRAME + 20))
        values = rng.integers(1, 256, length)
        if n % 2:  # many short codes, so that COBS is often complete
            values = np.where(rng.random(length) < 0.5, rng.integers(1, 4, length), values)
        encoded = values.astype(np.uint8).tobytes()
        if n % 5 == 0:  # a valid frame with a correct CRC
            encoded = pack_frame(bytes(rng.integers(0, 3, length % MAX_BODY).astype(np.uint8)))[:-1]
        elif n % 5 == 1:  # complete COBS, of any length around the limit: (mostly) a bad CRC
            size = length % 5 if n % 3 else MAX_BODY + 2 + int(rng.integers(-2, 3))
            encoded = cobs_encode(bytes(rng.integers(0, 3, size).astype(np.uint8)))
        reception = receive_frame(encoded)
        outcomes[reception.fault] += 1
        try:
            body = unpack_frame(encoded)
        except FrameError:
            body = None
        if reception.fault == ErrorCode.FRAME_TOO_LONG:
            assert len(reception.decoded) == MAX_BODY + 2
            continue
        assert len(encoded) <= MAX_FRAME  # the encoded limit never fires before the decoded one
        assert (reception.fault is None) == (body is not None)
        if body is not None:
            assert reception.decoded == body
    assert max_frame(MAX_BODY) == MAX_FRAME
    assert {ErrorCode.BAD_CRC, ErrorCode.FRAME_TOO_LONG, None} <= set(outcomes)
    assert min(outcomes.values()) > 50


# -- repeated requests (rule 3) ----------------------------------------------------------------------------
def test_a_repeated_train_is_executed_once_and_answered_the_same(device, mnist):
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    pixels, label = mnist.test_images[LEARNING_IMAGES[3]], int(mnist.test_labels[LEARNING_IMAGES[3]])
    request = frame(77, Opcode.TRAIN, train_request(label, False, Encoding.PACKED,
                                                    encode_image(pixels, Encoding.PACKED)))
    reply = device.feed(request)
    model.train_image(pixels, label, 1)
    assert device.feed(request) == reply
    assert same_parameters(device, model)
    # failed frames in between are answered but neither stored nor do they disturb the stored reply
    damaged = bytearray(with_crc(encode_packet(77, Opcode.TRAIN, b"\x01\x00\x00" + pixels.tobytes())))
    damaged[100] ^= 1
    assert refused(device, raw_frame(bytes(damaged))) == (77, ErrorCode.BAD_CRC, Opcode.TRAIN)
    assert device.feed(b"\x05\x01\x02\x00" + raw_frame(with_crc(b"\x01"))) == b""
    assert device.feed(request) == reply
    assert same_parameters(device, model)
    assert status(device, 78).images == 1
    # the same sequence number with another opcode is a new request
    [infer] = replies(device.feed(frame(77, Opcode.INFER, infer_request(Encoding.RAW, pixels.tobytes()))))
    assert infer.opcode == Opcode.INFER | REPLY
    assert status(device, 79).images == 2
    # the same opcode with another sequence number too
    device.feed(frame(80, Opcode.TRAIN, train_request(label, False, Encoding.RAW, pixels.tobytes())))
    model.train_image(pixels, label, 1)
    assert same_parameters(device, model)


def test_a_repeated_refusal_gets_the_stored_error(device):
    request = frame(3, Opcode.SET, set_request(Parameter.LR_SHIFT, 9, 0))
    reply = device.feed(request)
    assert refused(device, request) == (3, ErrorCode.OUT_OF_RANGE, Opcode.SET)
    assert device.feed(request) == reply
    assert status(device).refused == 1  # the resent reply is not a new refusal
    # a repeated STATUS is answered with the stored (stale) reply, as any repeated request
    first = device.feed(frame(4, Opcode.STATUS))
    assert device.feed(b"\x05\x01\x02\x00") == b""  # a failed frame: bad_frames 1
    assert device.feed(frame(4, Opcode.STATUS)) == first
    assert Status.decode(replies(first)[0].payload).bad_frames == 0
    assert status(device, 5).bad_frames == 1


# -- garbage ---------------------------------------------------------------------------------------------
def test_garbage_leaves_the_device_answering_and_the_weights_unchanged(device, mnist):
    rng = np.random.default_rng(2024)
    model = IntegerSpikingModel.from_bundle(BUNDLE)
    pixels = mnist.test_images[0]
    bodies = [encode_packet(1, Opcode.INFO), encode_packet(2, Opcode.STATUS),
              encode_packet(3, Opcode.READ_WEIGHTS, _read(0, 0, 5, 5, 40)),
              encode_packet(4, Opcode.INFER, infer_request(Encoding.PACKED, encode_image(pixels, Encoding.PACKED))),
              encode_packet(5, Opcode.SET, set_request(Parameter.LEARN, 0, 1))]
    templates = [pack_frame(body) for body in bodies]
    stream = bytearray()
    for n in range(2000):
        kind = n % 5
        if n % 250 == 0:  # oversize junk
            stream += bytes(rng.integers(1, 256, MAX_FRAME + 50).astype(np.uint8)) + b"\x00"
            continue
        if kind == 0:  # random bytes, zeros rare
            data = rng.integers(0, 256, int(rng.integers(1, 60))).astype(np.uint8)
            data[rng.random(len(data)) < 0.9] |= 1
            stream += data.tobytes()
            continue
        pick = int(rng.integers(0, len(templates)))
        data = bytearray(templates[pick])
        if kind == 1:  # bit flips
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # truncated, or bytes inserted or deleted
            cut = int(rng.integers(0, len(data)))
            inserted = bytes(rng.integers(0, 256, int(rng.integers(1, 4))).astype(np.uint8))
            data = [data[:cut], data[:cut] + data[cut + 1:], data[:cut] + inserted + data[cut:]][n // 5 % 3]
        elif kind == 3:  # spliced with another frame
            other = templates[int(rng.integers(0, len(templates)))]
            data = data[:int(rng.integers(0, len(data)))] + other[int(rng.integers(0, len(other))):]
        else:  # a good frame of a damaged packet: exercises rule 4 (never a LOAD or TRAIN, which would learn)
            body = bytearray(bodies[pick])
            for _ in range(int(rng.integers(1, 3))):
                body[int(rng.integers(0, min(len(body), 12)))] = int(rng.integers(0, 256))
            if body[2] in (Opcode.LOAD_WEIGHTS, Opcode.TRAIN):
                body[2] |= REPLY
            data = bytearray(pack_frame(bytes(body)))
        stream += data
    out = bytearray()
    for start in range(0, len(stream), 997):
        out += device.feed(bytes(stream[start:start + 997]))
    out += device.feed(b"\x00")  # ends whatever the garbage left unfinished
    errors = collections.Counter()
    for packet in replies(bytes(out)):  # every reply is a good frame: an error or a reply
        assert packet.opcode == Opcode.ERROR or packet.opcode & REPLY
        if packet.opcode == Opcode.ERROR:
            errors[ErrorCode(packet.payload[0])] += 1
    assert errors[ErrorCode.BAD_CRC] > 500 and errors[ErrorCode.FRAME_TOO_LONG] == 8
    assert len(errors) >= 5  # rule 4's errors too
    assert same_parameters(device, model)
    after = status(device, 200)
    assert after.bad_frames > 500 and after.long_frames == 8 and after.refused > 50
    [info] = replies(device.feed(frame(201, Opcode.INFO)))
    assert Info.decode(info.payload) == ReferenceDevice(BUNDLE).info


def test_the_constructor_refuses_what_info_cannot_carry():
    from poise.errors import PoiseError

    with pytest.raises(PoiseError):
        ReferenceDevice(BUNDLE, lanes=0)
    with pytest.raises(PoiseError):
        ReferenceDevice(BUNDLE, max_body=MAX_BODY + 1)
    with pytest.raises(PoiseError):
        ReferenceDevice(dataclasses.replace(BUNDLE, fixed=None))


def test_a_build_without_learning_constants_refuses_train(mnist):
    fixed = dataclasses.replace(BUNDLE.fixed, eta=None, eta_format=None)
    device = ReferenceDevice(dataclasses.replace(BUNDLE, fixed=fixed))
    pixels = mnist.test_images[0].tobytes()
    assert refused(device, frame(1, Opcode.TRAIN, train_request(0, False, Encoding.RAW, pixels))) == (
        1, ErrorCode.OUT_OF_RANGE, Opcode.TRAIN)
    assert refused(device, frame(2, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, 1))) == (
        2, ErrorCode.OUT_OF_RANGE, Opcode.SET)
    ask(device, 3, Opcode.SET, set_request(Parameter.LEARN, 0, 0))
    ask(device, 4, Opcode.INFER, infer_request(Encoding.RAW, pixels))
    assert status(device) == Status(0, 0, 0, 0, 0, 2, 1, 0)
