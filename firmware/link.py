"""The host side of the framed request/reply link (docs/PROTOCOL.md): transports that move bytes, and
:class:`Link`, which turns them into requests that get exactly one reply each.

A :class:`Transport` moves raw bytes: :class:`SerialTransport` over a UART (pyserial), or
:class:`LoopbackTransport` to an in-process device model. :class:`Link` frames each request with a new
sequence number (mod 256), reads frames until the reply carrying that sequence arrives and ignores
everything else (unreadable frames, replies to other sequences, non-reply packets), counting it in
:attr:`Link.stats`.

Retries are safe because the device remembers the last request it executed: a request whose sequence AND
opcode equal that one is not executed again, the device resends its stored reply. So on a timeout, or on an
ERROR BAD_CRC reply carrying our sequence, the link resends the *same* frame (same sequence), at most
``retries`` times.

Limits of that guarantee, which callers should know:

- The device remembers one request. With pipelining (:meth:`Link.submit` / :meth:`Link.collect`), a retry of
  request k after the device already executed k + 1 executes k again. Only pipeline requests that are safe
  to repeat (INFER, READ_WEIGHTS, INFO, SET, LOAD_WEIGHTS of an addressed chunk), or none of TRAIN.
- A new :class:`Link` whose first (sequence, opcode) equals the last request of a previous session would
  get that session's stored reply instead of executing. The first sequence is therefore random unless
  given; a driver that must be exact starts each session with an idempotent request (INFO).

A :class:`Link` is not thread-safe: one thread drives it.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

from poise.errors import PoiseError
from poise.firmware.framing import FrameError, FrameSplitter, pack_frame, unpack_frame
from poise.firmware.protocol import (
    REPLY,
    ErrorCode,
    Opcode,
    Packet,
    ProtocolError,
    check_reply,
    decode_packet,
    encode_packet,
)

DEFAULT_BAUDRATE = 3_000_000
_T = TypeVar("_T")


class LinkError(PoiseError):
    """The link to the device failed: no device, no reply, a vanished port, or a misused :class:`Link`."""


class PortVanishedError(LinkError):
    """The port went away while in use (cable unplugged, board reset or re-enumerated)."""


class NoReplyError(LinkError):
    """A request went unanswered on every try."""


# ---------------------------------------------------------------------------------------------- transports


class Transport(abc.ABC):
    """Moves raw bytes to and from a device. ``name`` identifies it in messages (a port path, "loopback")."""

    name: str

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send ``data`` (all of it) to the device."""

    @abc.abstractmethod
    def read(self, timeout: float) -> bytes:
        """The bytes that arrived within ``timeout`` seconds, possibly ``b""``; returns as soon as some did."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the transport; closing twice is harmless."""


class Device(Protocol):
    """An in-process device: each chunk of bytes in gives the bytes it sends back (possibly none)."""

    def feed(self, data: bytes) -> bytes: ...


class LoopbackTransport(Transport):
    """A transport to an in-process ``device`` (a reference model or a test fake).

    :meth:`write` hands the bytes to ``device.feed`` and buffers what it returns; :meth:`read` returns the
    buffer, or, when it is empty, waits out ``timeout`` and returns ``b""`` (nothing can arrive later, since the
    device only answers writes).
    """

    def __init__(self, device: Device, name: str = "loopback") -> None:
        self.device = device
        self.name = name
        self._received = bytearray()
        self._closed = False

    def write(self, data: bytes) -> None:
        self._check_open()
        self._received += self.device.feed(bytes(data))

    def read(self, timeout: float) -> bytes:
        self._check_open()
        if not self._received:
            time.sleep(max(timeout, 0.0))
            return b""
        data = bytes(self._received)
        self._received.clear()
        return data

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise LinkError(f"{self.name} is closed: open a new link to talk to the device again")


class SerialTransport(Transport):
    """A UART through pyserial, opened exclusively at ``baudrate`` 8N1 without flow control.

    Raises :class:`LinkError` when the port cannot be opened (naming the likely cause) and
    :class:`PortVanishedError` when it fails while in use.
    """

    def __init__(self, port: str, baudrate: int = DEFAULT_BAUDRATE) -> None:
        import serial  # pyserial; imported here so the rest of the package works without it

        self.name = port
        self.baudrate = baudrate
        self._serial_errors: tuple[type[BaseException], ...] = (serial.SerialException, OSError)
        try:
            self._port = serial.Serial(port, baudrate, timeout=0.0, write_timeout=None, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as error:
            raise LinkError(_open_failure(port, baudrate, error)) from error
        self._timeout: float = 0.0
        self._port.reset_input_buffer()

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except self._serial_errors as error:
            raise _vanished(self.name, error) from error

    def read(self, timeout: float) -> bytes:
        timeout = max(timeout, 0.0)
        try:
            if timeout != self._timeout:  # pyserial reconfigures the port on every timeout change
                self._port.timeout = self._timeout = timeout
            data = self._port.read(1)
            if data:
                waiting = self._port.in_waiting
                if waiting:
                    data += self._port.read(waiting)
            return data
        except self._serial_errors as error:
            raise _vanished(self.name, error) from error

    def close(self) -> None:
        with contextlib.suppress(*self._serial_errors):  # a vanished port has nothing left to release
            self._port.close()


def _open_failure(port: str, baudrate: int, error: BaseException) -> str:
    code = getattr(error, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return (f"no device at {port}: check the cable, that the board is powered and flashed, and the udev "
                "permissions (is your user in the dialout group?)")
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied opening {port}: add your user to the dialout group "
                "(sudo usermod -aG dialout $USER, then log in again) or install the board's udev rule")
    if code in (errno.EAGAIN, errno.EBUSY):
        return f"{port} is in use by another program (a serial terminal?): close it and try again"
    if isinstance(error, ValueError):
        return f"cannot open {port} at {baudrate} baud: {error}"
    return (f"cannot open {port} ({error}): check the cable, that the board is powered and flashed, and the "
            "udev permissions (is your user in the dialout group?)")


def _vanished(name: str, error: BaseException) -> PortVanishedError:
    return PortVanishedError(f"the port {name} vanished while in use ({error}): was the cable unplugged or the "
                             "board reset? Reconnect it and open the link again")


# ---------------------------------------------------------------------------------------------------- link


@dataclass
class LinkStats:
    """What a :class:`Link` has seen since it was opened.

    ``requests``: new requests sent (each with a new sequence number). ``retries``: resends of a request.
    ``bad_frames``: frames that did not unpack or decode (bad CRC, bad COBS, wrong version, oversize).
    ``stray_replies``: well-formed packets that answer nothing outstanding (another sequence, another
    opcode, a duplicate of a reply already taken, or not a reply at all). ``timeouts``: tries that timed out.
    """

    requests: int = 0
    retries: int = 0
    bad_frames: int = 0
    stray_replies: int = 0
    timeouts: int = 0


@dataclass
class _Pending:
    request: Packet
    frame: bytes
    tries: int
    sent_at: float
    reply: Packet | None = None
    failure: LinkError | None = None


def _opcode_name(opcode: int) -> str:
    return Opcode(opcode).name if opcode in Opcode._value2member_map_ else f"opcode 0x{opcode:02x}"


class Link:
    """Requests over a :class:`Transport`, each matched to its one reply by sequence number.

    ``timeout`` is how long each try waits for its reply (seconds); a request is sent at most
    ``1 + retries`` times. At most ``window`` requests may be outstanding (submitted, not yet collected).
    ``first_sequence`` is the sequence number of the first request (random when ``None``, see the module
    docstring). The link owns the transport: :meth:`close` closes it.
    """

    def __init__(self, transport: Transport, timeout: float = 2.0, retries: int = 3, window: int = 2,
                 first_sequence: int | None = None) -> None:
        if timeout <= 0 or retries < 0 or not 1 <= window <= 255:
            raise ValueError(f"need timeout > 0, retries ≥ 0 and 1 ≤ window ≤ 255, got {timeout}, {retries}, "
                             f"{window}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.window = window
        self.stats = LinkStats()
        self._next_sequence = secrets.randbelow(256) if first_sequence is None else first_sequence & 0xFF
        self._outstanding: dict[int, _Pending] = {}
        self._splitter = FrameSplitter()
        self._last_bad_frame: str | None = None

    # ------------------------------------------------------------------------------------------ public API

    def request(self, opcode: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one request and return its reply's payload. Raises :class:`~poise.firmware.protocol.DeviceError`
        for an error reply, :class:`NoReplyError` when every try timed out, :class:`PortVanishedError` if the
        port goes away. ``timeout`` overrides the link's per-try timeout."""
        return self.collect(self.submit(opcode, payload), timeout)

    def submit(self, opcode: int, payload: bytes = b"") -> int:
        """Send a request now and return its sequence number, for :meth:`collect`. Raises :class:`LinkError`
        when ``window`` requests are already outstanding."""
        if len(self._outstanding) >= self.window:
            raise LinkError(f"{len(self._outstanding)} requests are already outstanding, the window is "
                            f"{self.window}: collect one before submitting another")
        if opcode & REPLY or opcode == Opcode.ERROR:
            raise ProtocolError(f"0x{opcode:02x} is a reply opcode; requests use opcodes below 0x7f")
        sequence = self._next_sequence
        request = Packet(sequence, opcode, bytes(payload))
        frame = pack_frame(encode_packet(sequence, opcode, request.payload))  # refuses oversize payloads first
        self._next_sequence = (sequence + 1) & 0xFF
        self._outstanding[sequence] = _Pending(request, frame, tries=1, sent_at=time.monotonic())
        self.stats.requests += 1
        try:
            self._write(frame)
        except BaseException:
            del self._outstanding[sequence]
            raise
        return sequence

    def collect(self, sequence: int, timeout: float | None = None) -> bytes:
        """The reply payload for the submitted request ``sequence``, waiting for it (and retrying it alone) as
        :meth:`request` does. Replies to other outstanding requests that arrive meanwhile are kept for their
        own :meth:`collect`. Each sequence is collected once."""
        pending = self._outstanding.get(sequence)
        if pending is None:
            raise LinkError(f"no outstanding request has sequence {sequence}: it was never submitted or was "
                            "collected already")
        timeout = self.timeout if timeout is None else timeout
        if timeout <= 0:
            raise ValueError(f"a timeout must be positive, got {timeout}")
        started = time.monotonic()
        bad_before = self.stats.bad_frames
        try:
            while True:
                if pending.failure is not None:
                    raise pending.failure
                if pending.reply is not None:
                    return check_reply(pending.reply, pending.request)
                remaining = max(pending.sent_at, started) + timeout - time.monotonic()
                if remaining > 0:
                    self._receive(remaining)
                    continue
                self.stats.timeouts += 1
                if pending.tries > self.retries:
                    raise NoReplyError(self._no_reply_message(pending, timeout, self.stats.bad_frames - bad_before))
                self._resend(pending)
        finally:
            self._outstanding.pop(sequence, None)

    @property
    def outstanding(self) -> list[int]:
        """Sequence numbers submitted and not yet collected, oldest first."""
        return list(self._outstanding)

    def close(self) -> None:
        """Close the transport; outstanding requests are abandoned."""
        self._outstanding.clear()
        self.transport.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- internals

    def _receive(self, timeout: float) -> None:
        """Read once (up to ``timeout``) and file every complete frame."""
        data = self._io(lambda: self.transport.read(timeout))
        dropped = self._splitter.dropped_frames
        frames = self._splitter.feed(data)
        if self._splitter.dropped_frames != dropped:
            self.stats.bad_frames += self._splitter.dropped_frames - dropped
            self._last_bad_frame = "a frame longer than any valid frame"
        for frame in frames:
            try:
                packet = decode_packet(unpack_frame(frame))
            except FrameError as error:  # includes ProtocolError (short header, other version)
                self.stats.bad_frames += 1
                self._last_bad_frame = str(error)
                continue
            self._file(packet)

    def _file(self, packet: Packet) -> None:
        pending = self._outstanding.get(packet.sequence)
        if pending is None or not packet.is_reply or pending.reply is not None or pending.failure is not None:
            self.stats.stray_replies += 1
            return
        if packet.opcode == Opcode.ERROR:
            if len(packet.payload) == 2 and packet.payload[0] == ErrorCode.BAD_CRC:
                # The device read our sequence from a corrupt frame (its opcode byte may be corrupt too).
                self._retry_after_bad_crc(pending)
                return
            if len(packet.payload) == 2 and packet.payload[1] != pending.request.opcode:
                self.stats.stray_replies += 1
                return
        elif packet.opcode != pending.request.opcode | REPLY:
            self.stats.stray_replies += 1
            return
        pending.reply = packet

    def _retry_after_bad_crc(self, pending: _Pending) -> None:
        if pending.tries > self.retries:
            pending.failure = LinkError(
                f"{self.transport.name} reported a corrupt frame for {_opcode_name(pending.request.opcode)} on "
                f"each of {pending.tries} tries: the line is corrupting data; check the cable, ground and baud "
                "rate")
            return
        self._resend(pending)

    def _resend(self, pending: _Pending) -> None:
        pending.tries += 1
        pending.sent_at = time.monotonic()
        self.stats.retries += 1
        self._write(pending.frame)

    def _write(self, frame: bytes) -> None:
        self._io(lambda: self.transport.write(frame))

    def _io(self, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except LinkError:
            raise
        except OSError as error:  # a transport that does not translate its own failures
            raise _vanished(self.transport.name, error) from error

    def _no_reply_message(self, pending: _Pending, timeout: float, bad_frames: int) -> str:
        message = (f"no reply from {self.transport.name} to {_opcode_name(pending.request.opcode)} after "
                   f"{pending.tries} tries (timeout {timeout:g} s): is the device running poise firmware at this "
                   "baud rate?")
        if bad_frames:
            message += f" ({bad_frames} unreadable frame(s) arrived meanwhile, the last: {self._last_bad_frame})"
        return message
