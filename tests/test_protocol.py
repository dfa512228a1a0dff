"""The command protocol's packet layer: headers, sequence numbers, replies and error replies."""

import pytest

from poise.firmware.framing import pack_frame, unpack_frame
from poise.firmware.protocol import (
    HEADER,
    PROTOCOL_VERSION,
    REPLY,
    DeviceError,
    ErrorCode,
    Opcode,
    ProtocolError,
    check_reply,
    decode_packet,
    encode_packet,
    error_payload,
)


def test_packets_round_trip_through_frames():
    body = encode_packet(200, Opcode.INFER, bytes(range(256)) * 3)
    packet = decode_packet(unpack_frame(pack_frame(body)))
    assert (packet.sequence, packet.opcode, packet.payload) == (200, Opcode.INFER, bytes(range(256)) * 3)
    assert not packet.is_reply
    assert body[:HEADER.size] == bytes((PROTOCOL_VERSION, 200, Opcode.INFER))


def test_a_reply_answers_its_request_or_names_the_error():
    request = decode_packet(encode_packet(7, Opcode.TRAIN, b"\x03"))
    assert check_reply(decode_packet(encode_packet(7, Opcode.TRAIN | REPLY, b"ok")), request) == b"ok"
    error = decode_packet(encode_packet(7, Opcode.ERROR, error_payload(ErrorCode.BUSY, Opcode.TRAIN)))
    assert error.is_reply
    with pytest.raises(DeviceError, match="the device refused TRAIN: busy") as caught:
        check_reply(error, request)
    assert caught.value.code == ErrorCode.BUSY
    with pytest.raises(ProtocolError, match="sequence 8"):
        check_reply(decode_packet(encode_packet(8, Opcode.TRAIN | REPLY)), request)
    with pytest.raises(ProtocolError, match="does not answer"):
        check_reply(decode_packet(encode_packet(7, Opcode.INFER | REPLY)), request)
    with pytest.raises(ProtocolError, match="malformed error reply"):
        check_reply(decode_packet(encode_packet(7, Opcode.ERROR, b"\xee\x05")), request)


def test_bad_headers_are_refused():
    with pytest.raises(ProtocolError, match="3-byte header"):
        decode_packet(b"\x01\x02")
    with pytest.raises(ProtocolError, match="protocol version 9"):
        decode_packet(bytes((9, 0, Opcode.INFO)))
    with pytest.raises(ProtocolError, match="one byte"):
        encode_packet(256, Opcode.INFO)


def test_opcodes_and_error_codes_are_distinct_and_replies_never_collide_with_requests():
    assert len({int(op) for op in Opcode}) == len(Opcode) and len({int(c) for c in ErrorCode}) == len(ErrorCode)
    assert all(int(op) < REPLY for op in Opcode)
