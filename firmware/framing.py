"""The UART framing shared by the host driver and the device: COBS-encoded packets ending in a 0x00
delimiter, each carrying a CRC-16 of its contents (docs/PROTOCOL.md, "Frames").

A packet is ``body ‖ crc`` where ``crc`` is :func:`crc16` of ``body`` as two bytes, least significant first.
On the wire it is ``cobs_encode(packet) ‖ 0x00``; COBS removes every 0x00 from the packet, so the delimiter
marks frame boundaries unambiguously and a receiver that lost sync drops bytes up to the next 0x00.

Every function here is the host-side reference that the RTL frame codec is tested against.
"""

from __future__ import annotations

from poise.errors import PoiseError

DELIMITER = 0x00
CRC_POLY = 0x1021
"""CRC-16/CCITT-FALSE: x¹⁶ + x¹² + x⁵ + 1, initial value 0xFFFF, MSB first, no reflection, no final XOR."""
CRC_INIT = 0xFFFF
MAX_BODY = 2048
"""Largest packet body in bytes (a 784-pixel image plus headers fits with room to spare)."""


def max_frame(max_body: int) -> int:
    """Longest COBS encoding of a ``max_body``-byte body and its CRC, delimiter not counted."""
    packet = max_body + 2
    return packet + packet // 254 + 1


MAX_FRAME = max_frame(MAX_BODY)
"""Longest COBS encoding of a body at the limit and its CRC (delimiter not counted)."""


class FrameError(PoiseError):
    """A frame that cannot be accepted: the message names what was wrong with it."""


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``, bit-serial as the device computes it (one byte per step there)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: ``data`` without any 0x00, one code byte per run of up to 254
    non-zero bytes (the output is at most ⌈len/254⌉ + 1 bytes longer). The delimiter is not included."""
    out = bytearray()
    block = bytearray()
    full = False  # the last block written was a full 254-byte run (code 255, no zero implied after it)
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
            full = False
        else:
            block.append(byte)
            full = False
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
                full = True
    if not full:  # data ending in a full run needs no final code
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """The inverse of :func:`cobs_encode` (without the delimiter). Raises :class:`FrameError` on a 0x00 inside
    the frame or a code byte that points past its end."""
    out = bytearray()
    index = 0
    while index < len(data):
        code = data[index]
        if code == 0:
            raise FrameError(f"COBS frame has a 0x00 at byte {index}; frames end at the first 0x00")
        end = index + code
        if end > len(data):
            raise FrameError(f"COBS code byte {code} at byte {index} runs past the frame's {len(data)} bytes "
                             "(a truncated frame)")
        block = data[index + 1:end]
        if DELIMITER in block:
            raise FrameError(f"COBS frame has a 0x00 inside the block at byte {index + 1}")
        out += block
        index = end
        if code != 255 and index < len(data):
            out.append(0)
    return bytes(out)


def pack_frame(body: bytes) -> bytes:
    """The bytes on the wire for packet ``body``: COBS(body ‖ CRC) ‖ 0x00."""
    if len(body) > MAX_BODY:
        raise FrameError(f"a packet body of {len(body)} bytes exceeds the {MAX_BODY}-byte limit")
    crc = crc16(body)
    return cobs_encode(body + bytes((crc & 0xFF, crc >> 8))) + bytes((DELIMITER,))


def unpack_frame(frame: bytes) -> bytes:
    """The packet body of one frame (with or without its trailing 0x00). Raises :class:`FrameError` naming
    the problem: empty, oversize, bad COBS, too short for a CRC, or a CRC mismatch."""
    if frame.endswith(bytes((DELIMITER,))):
        frame = frame[:-1]
    if not frame:
        raise FrameError("empty frame (two delimiters in a row)")
    if len(frame) > MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes is longer than any valid frame (body limit {MAX_BODY})")
    packet = cobs_decode(frame)
    if len(packet) > MAX_BODY + 2:
        raise FrameError(f"frame decodes to {len(packet)} bytes, more than a {MAX_BODY}-byte body and its CRC")
    if len(packet) < 2:
        raise FrameError(f"frame holds {len(packet)} byte(s), too short for its 2-byte CRC")
    body, received = packet[:-2], packet[-2] | packet[-1] << 8
    expected = crc16(body)
    if received != expected:
        raise FrameError(f"bad CRC: the frame says 0x{received:04x}, its {len(body)} bytes give 0x{expected:04x}")
    return body


class FrameSplitter:
    """Cuts a byte stream into frames at each 0x00, as the device's receiver does: bytes beyond
    ``MAX_BODY``-sized frames are dropped up to the next delimiter and counted, never buffered without
    bound."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.overflowed = False
        self.dropped_frames = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The complete frames (without delimiters) that ``data`` finishes, in order."""
        frames = []
        for byte in data:
            if byte == DELIMITER:
                if self.overflowed:
                    self.dropped_frames += 1
                elif self.buffer:
                    frames.append(bytes(self.buffer))
                self.buffer.clear()
                self.overflowed = False
            elif not self.overflowed:
                self.buffer.append(byte)
                if len(self.buffer) > MAX_FRAME:
                    self.buffer.clear()
                    self.overflowed = True
        return frames
