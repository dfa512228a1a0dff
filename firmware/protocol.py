"""The command protocol over the framed UART link: the one definition the host driver and the device's
command controller both take their numbers from (docs/PROTOCOL.md).

Every packet body (see :mod:`poise.firmware.framing`) starts with a 3-byte header:

    version (u8) ‖ sequence (u8) ‖ opcode (u8) ‖ payload

A reply carries the request's sequence number and either ``opcode | REPLY`` with the result, or
:attr:`Opcode.ERROR` with one :class:`ErrorCode` byte and the opcode it answers. Multi-byte fields are little
endian. Every request gets exactly one reply.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from poise.firmware.framing import FrameError

PROTOCOL_VERSION = 1
REPLY = 0x80
"""Set in the opcode of every successful reply."""
HEADER = struct.Struct("<BBB")


class Opcode(enum.IntEnum):
    """Request opcodes (a reply sets :data:`REPLY`)."""

    INFO = 0x01
    LOAD_WEIGHTS = 0x02
    READ_WEIGHTS = 0x03
    INFER = 0x04
    TRAIN = 0x05
    SET = 0x06
    RESET = 0x07
    STATUS = 0x08
    ERROR = 0x7F  # replies only


class ErrorCode(enum.IntEnum):
    """Why a request was refused; the error reply's payload is ``code (u8) ‖ opcode (u8)``."""

    BAD_CRC = 1
    UNKNOWN_OPCODE = 2
    BAD_LENGTH = 3
    BUSY = 4
    OUT_OF_RANGE = 5
    BAD_VERSION = 6
    FRAME_TOO_LONG = 7
    BAD_ENCODING = 8


class ProtocolError(FrameError):
    """A packet that frames correctly but breaks the protocol (wrong version, unknown opcode, bad length)."""


class DeviceError(ProtocolError):
    """The device answered with an error reply: ``code`` says why, ``opcode`` what it answered."""

    def __init__(self, code: ErrorCode, opcode: int) -> None:
        name = Opcode(opcode).name if opcode in Opcode._value2member_map_ else f"0x{opcode:02x}"
        super().__init__(f"the device refused {name}: {code.name.lower().replace('_', ' ')}")
        self.code, self.opcode = code, opcode


@dataclass(frozen=True)
class Packet:
    """A decoded packet body: its sequence number, opcode and payload bytes."""

    sequence: int
    opcode: int
    payload: bytes

    @property
    def is_reply(self) -> bool:
        return bool(self.opcode & REPLY) or self.opcode == Opcode.ERROR


def encode_packet(sequence: int, opcode: int, payload: bytes = b"") -> bytes:
    """The packet body: header and payload (frame it with :func:`~poise.firmware.framing.pack_frame`)."""
    if not 0 <= sequence <= 0xFF or not 0 <= opcode <= 0xFF:
        raise ProtocolError(f"sequence {sequence} and opcode {opcode} must each fit in one byte")
    return HEADER.pack(PROTOCOL_VERSION, sequence, opcode) + payload


def decode_packet(body: bytes) -> Packet:
    """Split a packet body into header fields and payload; refuses short bodies and other versions."""
    if len(body) < HEADER.size:
        raise ProtocolError(f"a packet needs a {HEADER.size}-byte header, this one has {len(body)} bytes")
    version, sequence, opcode = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version}, this host speaks version {PROTOCOL_VERSION}: update "
                            "poise or rebuild the bitstream so both sides match")
    return Packet(sequence, opcode, body[HEADER.size:])


def error_payload(code: ErrorCode, opcode: int) -> bytes:
    return bytes((int(code), opcode & 0xFF))


def check_reply(reply: Packet, request: Packet) -> bytes:
    """The payload of ``reply`` if it answers ``request`` successfully; raises :class:`DeviceError` for an
    error reply and :class:`ProtocolError` for a reply to something else."""
    if reply.sequence != request.sequence:
        raise ProtocolError(f"reply has sequence {reply.sequence}, the request had {request.sequence}")
    if reply.opcode == Opcode.ERROR:
        if len(reply.payload) != 2 or reply.payload[0] not in ErrorCode._value2member_map_:
            raise ProtocolError(f"malformed error reply {reply.payload.hex()}")
        raise DeviceError(ErrorCode(reply.payload[0]), reply.payload[1])
    if reply.opcode != request.opcode | REPLY:
        raise ProtocolError(f"reply opcode 0x{reply.opcode:02x} does not answer request opcode "
                            f"0x{request.opcode:02x}")
    return reply.payload
