"""The UART framing's host reference: CRC-16/CCITT-FALSE, COBS against the PyPI ``cobs`` package, and
hostile input (bit errors, truncation, stray delimiters, oversize frames)."""

import numpy as np
import pytest
from cobs import cobs as reference_cobs

from poise.firmware.framing import (
    DELIMITER,
    MAX_BODY,
    FrameError,
    FrameSplitter,
    cobs_decode,
    cobs_encode,
    crc16,
    pack_frame,
    unpack_frame,
)


def payloads(count: int, seed: int = 1) -> list[bytes]:
    """Edge payloads (empty, all zeros, runs of 253-256 non-zero bytes) and random ones, zeros frequent."""
    rng = np.random.default_rng(seed)
    edges = [b"", b"\x00", b"\x00" * 5, b"\x01", bytes(range(1, 255)), bytes([7]) * 253, bytes([7]) * 254,
             bytes([7]) * 255, bytes([7]) * 256 + b"\x00", b"\x00" + bytes([9]) * 600]
    random = [bytes(np.where(rng.random(n) < 0.2, 0, rng.integers(1, 256, n)).astype(np.uint8))
              for n in rng.integers(0, 1500, count)]
    return edges + random


def test_crc16_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1  # the catalogue's check value for CRC-16/CCITT-FALSE
    assert crc16(b"") == 0xFFFF


@pytest.mark.parametrize("payload", payloads(200))
def test_cobs_matches_the_reference_package_and_round_trips(payload):
    encoded = cobs_encode(payload)
    assert encoded == reference_cobs.encode(payload)
    assert DELIMITER not in encoded
    assert cobs_decode(encoded) == payload


def test_frames_round_trip_and_carry_one_delimiter():
    for body in payloads(100, seed=2):
        frame = pack_frame(body)
        assert frame.index(DELIMITER) == len(frame) - 1
        assert unpack_frame(frame) == body


def test_every_single_bit_error_is_caught():
    body = bytes(range(40))
    frame = bytearray(pack_frame(body))
    for index in range(len(frame) - 1):
        for bit in range(8):
            corrupt = bytearray(frame)
            corrupt[index] ^= 1 << bit
            if DELIMITER in corrupt[:-1]:  # the receiver would see two frames; each half is checked alone
                parts = bytes(corrupt).split(b"\x00")
                for part in filter(None, parts):
                    with pytest.raises(FrameError):
                        unpack_frame(part)
                continue
            with pytest.raises(FrameError):
                unpack_frame(bytes(corrupt))


@pytest.mark.parametrize(("frame", "message"), [
    (b"\x00", "empty frame"),
    (b"\x05\x01\x02", "runs past"),
    (b"\x03\x00\x01", "0x00"),
    (b"\x02\x07", "too short for its 2-byte CRC"),
    (pack_frame(b"hello")[:-1] + b"\x01", "bad CRC"),
    (b"\x01" * (MAX_BODY + 100), "longer than any valid frame"),
])
def test_hostile_frames_are_refused_with_the_reason(frame, message):
    with pytest.raises(FrameError, match=message):
        unpack_frame(frame)


def test_bodies_beyond_the_limit_are_refused():
    with pytest.raises(FrameError, match="exceeds"):
        pack_frame(bytes(MAX_BODY + 1))


def test_splitter_resynchronises_after_garbage_and_drops_oversize_frames():
    rng = np.random.default_rng(3)
    good = [pack_frame(bytes(rng.integers(0, 256, n).astype(np.uint8))) for n in (10, 0, 500, 784)]
    garbage = bytes(rng.integers(1, 256, 3 * MAX_BODY).astype(np.uint8))  # no delimiter: one huge frame
    stream = b"\x00\x00" + good[0] + garbage + b"\x00" + good[1] + good[2] + good[3]
    splitter, frames = FrameSplitter(), []
    for start in range(0, len(stream), 97):  # bytes arrive in arbitrary chunks
        frames += splitter.feed(stream[start:start + 97])
    assert [unpack_frame(frame) for frame in frames] == [unpack_frame(frame) for frame in good]
    assert splitter.dropped_frames == 1 and len(splitter.buffer) == 0
