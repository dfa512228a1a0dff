"""The host link: round trips, retries with the same sequence, stray and corrupt frames, pipelining, and the
serial transport on a real pty."""

import errno
import os
import select
import threading
import time

import pytest

from poise.firmware.framing import FrameError, FrameSplitter, cobs_decode, pack_frame, unpack_frame
from poise.firmware.link import (
    Link,
    LinkError,
    LoopbackTransport,
    NoReplyError,
    PortVanishedError,
    SerialTransport,
    Transport,
)
from poise.firmware.protocol import (
    PROTOCOL_VERSION,
    REPLY,
    DeviceError,
    ErrorCode,
    Opcode,
    Packet,
    decode_packet,
    encode_packet,
    error_payload,
)

FAST = 0.05  # seconds per try in the tests that time out


def flip_bit(frame: bytes, index: int) -> bytes:
    """``frame`` with one bit of byte ``index`` flipped, never creating a 0x00 (which would split it)."""
    out = bytearray(frame)
    out[index] ^= 0x01 if out[index] != 0x01 else 0x02
    return bytes(out)


class FakeDevice:
    """Answers each request with ``opcode | 0x80`` and the payload reversed. Like the firmware, it answers a
    corrupt frame whose header it can read with ERROR BAD_CRC and that sequence, and resends its stored
    reply (without executing) for a request whose sequence and opcode equal the last executed one.

    Knobs: ``silent`` (never answer), ``lose_requests`` / ``bad_crc`` / ``corrupt_replies`` (count down per
    request: ignore it, answer BAD_CRC, flip a bit in the reply frame), ``errors`` (opcode → error code),
    ``prefix`` (bytes sent before every reply).
    """

    def __init__(self) -> None:
        self.splitter = FrameSplitter()
        self.received: list[Packet] = []
        self.executed: list[Packet] = []
        self.last: tuple[int, int] | None = None
        self.stored = b""
        self.silent = False
        self.lose_requests = 0
        self.bad_crc = 0
        self.corrupt_replies = 0
        self.errors: dict[int, ErrorCode] = {}
        self.prefix = b""

    def feed(self, data: bytes) -> bytes:
        return b"".join(self.handle(frame) for frame in self.splitter.feed(data))

    def handle(self, frame: bytes) -> bytes:
        try:
            request = decode_packet(unpack_frame(frame))
        except FrameError:
            packet = cobs_decode(frame)
            return self.send(encode_packet(packet[1], Opcode.ERROR, error_payload(ErrorCode.BAD_CRC, packet[2])))
        self.received.append(request)
        if self.silent:
            return b""
        if self.lose_requests:
            self.lose_requests -= 1
            return b""
        if self.bad_crc:
            self.bad_crc -= 1
            return self.send(encode_packet(request.sequence, Opcode.ERROR,
                                           error_payload(ErrorCode.BAD_CRC, request.opcode)))
        if (request.sequence, request.opcode) != self.last:
            self.executed.append(request)
            if request.opcode in self.errors:
                body = encode_packet(request.sequence, Opcode.ERROR,
                                     error_payload(self.errors[request.opcode], request.opcode))
            else:
                body = encode_packet(request.sequence, request.opcode | REPLY, request.payload[::-1])
            self.last, self.stored = (request.sequence, request.opcode), body
        return self.send(self.stored)

    def send(self, body: bytes) -> bytes:
        frame = pack_frame(body)
        if self.corrupt_replies:
            self.corrupt_replies -= 1
            frame = flip_bit(frame, len(frame) // 2)
        return self.prefix + frame


def make_link(device: FakeDevice | None = None, **options) -> tuple[Link, FakeDevice]:
    device = FakeDevice() if device is None else device
    options.setdefault("timeout", FAST)
    options.setdefault("first_sequence", 0)
    return Link(LoopbackTransport(device), **options), device


def test_requests_round_trip_with_consecutive_sequence_numbers():
    link, device = make_link(first_sequence=10)
    payloads = [b"", b"\x00", b"abc", bytes(range(256)) * 4]
    with link:
        for payload in payloads:
            assert link.request(Opcode.INFER, payload) == payload[::-1]
        assert link.request(Opcode.INFO) == b""
    assert [p.sequence for p in device.received] == [10, 11, 12, 13, 14]
    assert [p.opcode for p in device.received] == [Opcode.INFER] * 4 + [Opcode.INFO]
    assert link.stats.requests == 5
    assert (link.stats.retries, link.stats.bad_frames, link.stats.stray_replies, link.stats.timeouts) == (0, 0, 0, 0)
    with pytest.raises(LinkError, match="closed"):
        link.request(Opcode.INFO)


def test_a_corrupt_reply_is_dropped_and_the_same_request_resent_once():
    link, device = make_link()
    device.corrupt_replies = 1
    assert link.request(Opcode.TRAIN, b"\x01\x02\x07") == b"\x07\x02\x01"
    assert [p.sequence for p in device.received] == [0, 0]  # the retry reuses the sequence
    assert len(device.executed) == 1  # and the device resent its stored reply instead of training again
    assert (link.stats.bad_frames, link.stats.timeouts, link.stats.retries) == (1, 1, 1)
    assert link.request(Opcode.TRAIN, b"\x05") == b"\x05"  # the next request is new and executes
    assert len(device.executed) == 2


def test_a_lost_request_is_resent_and_executed_once():
    link, device = make_link()
    device.lose_requests = 2
    assert link.request(Opcode.TRAIN, b"\x09") == b"\x09"
    assert len(device.received) == 3 and len(device.executed) == 1
    assert (link.stats.timeouts, link.stats.retries) == (2, 2)


def test_bad_crc_answering_our_sequence_resends_at_once():
    link, device = make_link(timeout=5.0)  # a retry that waited for the timeout would show in the elapsed time
    device.bad_crc = 1
    started = time.monotonic()
    assert link.request(Opcode.INFER, b"xyz") == b"zyx"
    assert time.monotonic() - started < 1.0
    assert (link.stats.retries, link.stats.timeouts) == (1, 0)
    assert [p.sequence for p in device.received] == [0, 0] and len(device.executed) == 1


class CorruptOnce(LoopbackTransport):
    """Flips a bit inside the payload of the first frame written, as line noise would."""

    def __init__(self, device: FakeDevice, marker: bytes) -> None:
        super().__init__(device)
        self.marker = marker
        self.corrupted = False

    def write(self, data: bytes) -> None:
        if not self.corrupted:
            self.corrupted = True
            data = flip_bit(data, data.index(self.marker) + 1)
        super().write(data)


def test_a_request_corrupted_on_the_line_is_answered_bad_crc_and_resent():
    device = FakeDevice()
    link = Link(CorruptOnce(device, b"\x11\x22\x33"), timeout=5.0, first_sequence=3)
    assert link.request(Opcode.SET, b"\x11\x22\x33\x44") == b"\x44\x33\x22\x11"
    assert [p.sequence for p in device.received] == [3]  # the corrupt copy never decoded on the device
    assert (link.stats.retries, link.stats.timeouts) == (1, 0)


def test_bad_crc_on_every_try_gives_up_naming_the_line():
    link, device = make_link(retries=2, timeout=5.0)
    device.bad_crc = 10
    with pytest.raises(LinkError, match="corrupt frame for INFER on each of 3 tries"):
        link.request(Opcode.INFER, b"a")
    assert len(device.received) == 3


def test_strays_garbage_and_non_replies_are_ignored_and_counted():
    link, device = make_link(first_sequence=5)
    stray = pack_frame(encode_packet(4, Opcode.INFER | REPLY, b"old"))  # a late reply to something else
    wrong_opcode = pack_frame(encode_packet(5, Opcode.TRAIN | REPLY, b"no"))  # our sequence, not our opcode
    echo = pack_frame(encode_packet(5, Opcode.INFER, b"me"))  # our own request echoed: not a reply
    other_version = pack_frame(bytes((PROTOCOL_VERSION + 1, 5, Opcode.INFER | REPLY)))
    device.prefix = b"\x17garbage" + b"\x00" + stray + b"\x00\x00\x55\x00" + wrong_opcode + echo + other_version
    assert link.request(Opcode.INFER, b"12") == b"21"
    assert link.stats.stray_replies == 3
    assert link.stats.bad_frames == 3  # the garbage, the half frame b"\x55", the other version
    assert (link.stats.retries, link.stats.timeouts) == (0, 0)


def test_a_silent_device_raises_no_reply_after_the_retries():
    link, device = make_link(retries=3)
    device.silent = True
    started = time.monotonic()
    with pytest.raises(NoReplyError, match=r"no reply from loopback to TRAIN after 4 tries \(timeout 0.05 s\): is "
                                           "the device running poise firmware at this baud rate"):
        link.request(Opcode.TRAIN, b"\x01")
    assert time.monotonic() - started < 4 * FAST + 0.5
    assert [p.sequence for p in device.received] == [0] * 4
    assert (link.stats.timeouts, link.stats.retries) == (4, 3)
    assert link.outstanding == []
    device.silent = False
    assert link.request(Opcode.INFO) == b""  # the link is usable afterwards, with the next sequence
    assert device.received[-1].sequence == 1


def test_no_reply_mentions_frames_that_could_not_be_read():
    class VersionNine(FakeDevice):
        def send(self, body: bytes) -> bytes:
            return pack_frame(bytes((9,)) + body[1:])

    link, _ = make_link(VersionNine(), retries=1)
    with pytest.raises(NoReplyError, match=r"2 unreadable frame.*protocol version 9"):
        link.request(Opcode.INFO)


def test_an_error_reply_raises_device_error_with_its_code():
    link, device = make_link()
    device.errors[Opcode.TRAIN] = ErrorCode.OUT_OF_RANGE
    with pytest.raises(DeviceError, match="refused TRAIN: out of range") as caught:
        link.request(Opcode.TRAIN, b"\xff")
    assert caught.value.code == ErrorCode.OUT_OF_RANGE and caught.value.opcode == Opcode.TRAIN
    assert link.stats.retries == 0
    assert link.request(Opcode.INFER, b"ok") == b"ko"


def test_pipelined_results_come_out_once_and_in_order():
    link, device = make_link(window=2)
    payloads = [bytes((i, i + 1)) for i in range(12)]
    results = []
    sequences = [link.submit(Opcode.INFER, payloads[0])]
    for index in range(1, len(payloads)):
        if index == 5:
            device.corrupt_replies = 1  # lose the reply to request 5 while 6's arrives first in the buffer
        sequences.append(link.submit(Opcode.INFER, payloads[index]))
        results.append(link.collect(sequences[index - 1]))
    results.append(link.collect(sequences[-1]))
    assert results == [p[::-1] for p in payloads]
    assert sequences == list(range(12))
    assert link.stats.retries == 1 and link.stats.bad_frames == 1
    # Only request 5 was resent; the device had executed 6 since, so its one-entry memory ran 5 again
    # (the documented reason not to pipeline non-idempotent requests).
    assert [p.sequence for p in device.received].count(5) == 2
    assert [p.sequence for p in device.received].count(6) == 1
    assert link.outstanding == []


def test_the_window_limits_outstanding_requests():
    link, _ = make_link(window=2)
    first = link.submit(Opcode.INFER, b"a")
    second = link.submit(Opcode.INFER, b"b")
    with pytest.raises(LinkError, match="2 requests are already outstanding, the window is 2"):
        link.submit(Opcode.INFER, b"c")
    assert link.collect(second) == b"b"  # out of order is allowed: the first reply waits in the stash
    assert link.collect(first) == b"a"
    with pytest.raises(LinkError, match="no outstanding request has sequence 0"):
        link.collect(first)


def test_sequence_numbers_wrap_at_256():
    link, device = make_link()
    for index in range(300):
        assert link.request(Opcode.TRAIN, bytes((index & 0xFF, 1))) == bytes((1, index & 0xFF))
    assert [p.sequence for p in device.received] == [i % 256 for i in range(300)]
    assert len(device.executed) == 300  # a reused sequence is a new request, not a repeat


def test_a_nonexistent_serial_port_names_the_path():
    with pytest.raises(LinkError, match=r"no device at /dev/ttyNOPE9: check the cable.*dialout group"):
        SerialTransport("/dev/ttyNOPE9")


class BrokenTransport(Transport):
    name = "/dev/ttyACM7"

    def write(self, data: bytes) -> None:
        pass

    def read(self, timeout: float) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    def close(self) -> None:
        pass


def test_a_transport_failing_with_os_error_is_a_vanished_port():
    with pytest.raises(PortVanishedError, match="/dev/ttyACM7 vanished"):
        Link(BrokenTransport(), timeout=FAST).request(Opcode.INFO)


def serve(master: int, device: FakeDevice, stop: threading.Event) -> None:
    """Answer on the pty master until ``stop`` is set or the pty closes."""
    while not stop.is_set():
        ready, _, _ = select.select([master], [], [], 0.01)
        if not ready:
            continue
        try:
            reply = device.feed(os.read(master, 4096))
            if reply:
                os.write(master, reply)
        except OSError:
            return


def test_serial_transport_talks_over_a_pty():
    master, slave = os.openpty()
    device = FakeDevice()
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(master, device, stop), daemon=True)
    try:
        transport = SerialTransport(os.ttyname(slave))
        thread.start()
        with Link(transport, timeout=1.0, first_sequence=0) as link:
            assert link.request(Opcode.INFO) == b""
            assert link.request(Opcode.INFER, bytes(range(256)) * 3) == bytes(range(256))[::-1] * 3
            device.corrupt_replies = 1
            assert link.request(Opcode.TRAIN, b"\x01\x02", timeout=0.1) == b"\x02\x01"
            sequence = link.submit(Opcode.INFER, b"p")
            assert link.collect(link.submit(Opcode.INFER, b"q")) == b"q"
            assert link.collect(sequence) == b"p"
        assert len(device.executed) == 5
        assert link.stats.retries == 1
    finally:
        stop.set()
        thread.join(timeout=2)
        os.close(master)
        os.close(slave)


def test_a_pty_closing_under_the_serial_transport_is_a_vanished_port():
    master, slave = os.openpty()
    name = os.ttyname(slave)
    transport = SerialTransport(name)
    try:
        os.close(master)
        os.close(slave)
        with pytest.raises(PortVanishedError, match=f"the port {name} vanished"):
            Link(transport, timeout=FAST).request(Opcode.INFO)
    finally:
        transport.close()


def test_a_pty_closing_between_write_and_read_is_a_vanished_port():
    master, slave = os.openpty()
    name = os.ttyname(slave)
    transport = SerialTransport(name)
    try:
        transport.write(b"\x01\x00")
        assert os.read(master, 16) == b"\x01\x00"
        assert transport.read(FAST) == b""
        os.close(master)
        os.close(slave)
        with pytest.raises(PortVanishedError, match=f"the port {name} vanished while in use"):
            transport.read(FAST)
    finally:
        transport.close()
