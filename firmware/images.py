"""Image encodings on the wire (docs/PROTOCOL.md, "Images"): the host encodes, the device decodes and
checks before it computes anything.

- ``RAW``: one byte per pixel, exactly as many bytes as the input layer has neurons.
- ``PACKED``: lossless zero-run coding. A non-zero byte is one pixel; ``0x00 n`` (1 ≤ n ≤ 255) is a run of
  n zero pixels. The runs and pixels must add up to exactly the input size. MNIST digits are mostly
  background: the 10,000 test images take 203.6 bytes on average, 26 % of RAW (``tests/test_images.py``).
"""

from __future__ import annotations

import numpy as np

from poise.firmware.messages import Encoding
from poise.firmware.protocol import ErrorCode, ProtocolError

MAX_RUN = 255


class EncodingError(ProtocolError):
    """An encoded image the device refuses; ``code`` is the error it answers with."""

    def __init__(self, message: str, code: ErrorCode) -> None:
        super().__init__(message)
        self.code = code


def encode_image(pixels: np.ndarray, encoding: Encoding) -> bytes:
    """The bytes of ``pixels`` (uint8 values, one image) in ``encoding``."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 1 or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise ProtocolError(f"an image is one row of byte pixels, not shape {pixels.shape} with range "
                            f"[{pixels.min(initial=0)}, {pixels.max(initial=0)}]")
    data = pixels.astype(np.uint8).tobytes()
    if encoding == Encoding.RAW:
        return data
    out, run = bytearray(), 0
    for value in data:
        if value == 0:
            run += 1
            if run == MAX_RUN:
                out += bytes((0, run))
                run = 0
            continue
        if run:
            out += bytes((0, run))
            run = 0
        out.append(value)
    if run:
        out += bytes((0, run))
    return bytes(out)


def decode_image(data: bytes, encoding: int, size: int) -> np.ndarray:
    """The ``size`` pixels ``data`` encodes, as the device decodes them; raises :class:`EncodingError`
    (BAD_ENCODING for an unknown encoding or a broken run, BAD_LENGTH for the wrong number of pixels)."""
    if encoding == Encoding.RAW:
        if len(data) != size:
            raise EncodingError(f"a raw image has {size} bytes, this one {len(data)}", ErrorCode.BAD_LENGTH)
        return np.frombuffer(data, np.uint8).copy()
    if encoding != Encoding.PACKED:
        raise EncodingError(f"unknown image encoding {encoding}", ErrorCode.BAD_ENCODING)
    pixels, index = bytearray(), 0
    while index < len(data):
        value = data[index]
        if value:
            pixels.append(value)
            index += 1
            continue
        if index + 1 >= len(data) or data[index + 1] == 0:
            raise EncodingError(f"zero run at byte {index} has no length (1-255)", ErrorCode.BAD_ENCODING)
        pixels += bytes(data[index + 1])
        index += 2
        if len(pixels) > size:
            break
    if len(pixels) != size:
        raise EncodingError(f"a packed image must decode to {size} pixels, this one gives "
                            f"{'more' if len(pixels) > size else len(pixels)}", ErrorCode.BAD_ENCODING)
    return np.frombuffer(bytes(pixels), np.uint8).copy()
