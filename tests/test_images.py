"""Image encodings (poise.firmware.images) and payload layouts (poise.firmware.messages): round trips on
real MNIST digits and edge images, every way a packed image can fail to decode, and the messages' encode and
decode pairs."""

import struct

import numpy as np
import pytest

from poise.firmware.images import EncodingError, decode_image, encode_image
from poise.firmware.messages import (
    ACCESS,
    MAX_READ,
    READ,
    SETTING,
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
from poise.firmware.protocol import ErrorCode, ProtocolError

N_IN = 784


def packed_size(pixels: np.ndarray) -> int:
    """The PACKED length worked out independently: one byte per non-zero pixel, two per run of up to 255
    zeros (a maximal zero run of length L takes ⌈L/255⌉ runs)."""
    zero = np.concatenate(([0], (pixels == 0).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(zero))
    lengths = edges[1::2] - edges[::2]
    return int(np.count_nonzero(pixels)) + 2 * int(np.sum(-(-lengths // 255)))


def test_packed_round_trips_every_mnist_test_image(mnist):
    sizes = []
    for pixels in mnist.test_images:
        packed = encode_image(pixels, Encoding.PACKED)
        assert np.array_equal(decode_image(packed, Encoding.PACKED, N_IN), pixels)
        sizes.append(len(packed))
    sizes = np.array(sizes)
    assert all(size == packed_size(p) for size, p in zip(sizes[:200], mnist.test_images[:200], strict=True))
    print(f"\nPACKED size over the {len(sizes)} MNIST test images: mean {sizes.mean():.2f} bytes "
          f"({sizes.mean() / N_IN:.1%} of RAW's {N_IN}), min {sizes.min()}, max {sizes.max()}")
    assert sizes.max() < N_IN // 2


def edge_images() -> list[np.ndarray]:
    images = [np.zeros(N_IN, np.uint8), np.full(N_IN, 255, np.uint8), np.ones(N_IN, np.uint8)]
    for run in (1, 254, 255, 256, 509, 510, 511, N_IN - 1):
        image = np.full(N_IN, 9, np.uint8)
        image[:run] = 0  # a leading run
        images.append(image)
        images.append(image[::-1].copy())  # a trailing run
    alternating = np.zeros(N_IN, np.uint8)
    alternating[::2] = 200  # the worst case: every zero a run of its own
    images.append(alternating)
    return images


@pytest.mark.parametrize("index", range(len(edge_images())))
def test_packed_and_raw_round_trip_edge_images(index):
    pixels = edge_images()[index]
    packed = encode_image(pixels, Encoding.PACKED)
    assert len(packed) == packed_size(pixels)
    assert np.array_equal(decode_image(packed, Encoding.PACKED, N_IN), pixels)
    raw = encode_image(pixels, Encoding.RAW)
    assert raw == pixels.tobytes()
    assert np.array_equal(decode_image(raw, Encoding.RAW, N_IN), pixels)


def test_packed_runs_are_at_most_255():
    assert encode_image(np.zeros(N_IN, np.uint8), Encoding.PACKED) == bytes((0, 255)) * 3 + bytes((0, 19))
    assert encode_image(np.array([0] * 255 + [7], np.uint8), Encoding.PACKED) == bytes((0, 255, 7))
    assert encode_image(np.array([0] * 256, np.uint8), Encoding.PACKED) == bytes((0, 255, 0, 1))


@pytest.mark.parametrize(("data", "encoding", "code"), [
    (bytes((0, 255)) * 3 + bytes((0,)), Encoding.PACKED, ErrorCode.BAD_ENCODING),  # truncated run: no length
    (bytes((0, 255)) * 3 + bytes((0, 0, 0, 19)), Encoding.PACKED, ErrorCode.BAD_ENCODING),  # run length 0
    (bytes((0, 255)) * 3 + bytes((0, 20)), Encoding.PACKED, ErrorCode.BAD_ENCODING),  # one pixel too many
    (bytes((0, 255)) * 3 + bytes((0, 19, 1)), Encoding.PACKED, ErrorCode.BAD_ENCODING),  # a pixel too many
    (bytes((0, 255)) * 4, Encoding.PACKED, ErrorCode.BAD_ENCODING),  # far too many
    (bytes((0, 255)) * 3 + bytes((0, 18)), Encoding.PACKED, ErrorCode.BAD_ENCODING),  # one too few
    (b"", Encoding.PACKED, ErrorCode.BAD_ENCODING),
    (bytes((5,)) * (N_IN + 1), Encoding.PACKED, ErrorCode.BAD_ENCODING),
    (bytes(N_IN), 2, ErrorCode.BAD_ENCODING),  # unknown encoding
    (bytes(N_IN), 255, ErrorCode.BAD_ENCODING),
    (bytes(N_IN - 1), Encoding.RAW, ErrorCode.BAD_LENGTH),
    (bytes(N_IN + 1), Encoding.RAW, ErrorCode.BAD_LENGTH),
])
def test_broken_images_are_refused_with_their_error(data, encoding, code):
    with pytest.raises(EncodingError) as caught:
        decode_image(data, encoding, N_IN)
    assert caught.value.code == code


def test_encode_image_takes_one_row_of_bytes():
    for bad in (np.zeros((28, 28), np.uint8), np.array([0, 256]), np.array([-1, 3])):
        with pytest.raises(ProtocolError):
            encode_image(bad, Encoding.RAW)


# -- messages ----------------------------------------------------------------------------------------------
def test_info_round_trips():
    info = Info(1, bytes(range(8)), "spike", 8, (784, 128, 64, 10), 8, 9, 16, 100, 50, 24_000_000, 3_000_000, 2048)
    payload = info.encode()
    assert len(payload) == 1 + 8 + 3 + 2 * 4 + 3 + 4 + 8 + 2
    assert Info.decode(payload) == info
    with pytest.raises(ProtocolError):
        Info.decode(payload[:-1])
    with pytest.raises(ProtocolError):
        Info.decode(payload[:9] + bytes((2,)) + payload[10:])  # input mode 2 does not exist


def test_status_round_trips():
    status = Status(1, 2, 3, 65535, 5, 6, 2**32 - 1, 1)
    assert Status.decode(status.encode()) == status
    with pytest.raises(ProtocolError):
        Status.decode(status.encode() + b"\x00")


def test_image_result_round_trips():
    result = ImageResult(7, 2339, 49920, 24_000, 20_000, (0, -1, 16384, -32768, 32767, 0, 0, 0, 0, 1))
    payload = result.encode()
    assert ImageResult.decode(payload, 10) == result
    with pytest.raises(ProtocolError):
        ImageResult.decode(payload, 9)


def test_parameter_requests_have_their_documented_layouts():
    access = Access(Target.BIASES, 1, 0, 300)
    values = np.array([-128, 127, 0, -1], np.int64)
    request = load_request(access, values)
    assert request[:ACCESS.size] == struct.pack("<BBHH", 1, 1, 0, 300)
    assert np.array_equal(decode_values(request[ACCESS.size:]), values)
    with pytest.raises(ProtocolError):
        decode_values(b"\x01\x02\x03")
    assert read_request(access, MAX_READ) == READ.pack(1, 1, 0, 300, MAX_READ)
    assert decode_loaded(struct.pack("<BBHHH", 0, 1, 127, 9, 1)) == (Access(Target.WEIGHTS, 1, 127, 9), 1)
    assert set_request(Parameter.LR_SHIFT, 0, 4) == SETTING.pack(2, 0, 4) == bytes((2, 0, 4, 0, 0, 0))
    assert set_request(Parameter.LEARN, 0, -1)[2:] == b"\xff" * 4
    assert infer_request(Encoding.PACKED, b"\x07") == b"\x01\x07"
    assert train_request(9, True, Encoding.RAW, b"\x05") == bytes((9, 1, 0, 5))
