"""The payload of every request and reply (docs/PROTOCOL.md, "Commands"): the one definition the host
driver, the reference device and the RTL command controller take their layouts from.

All multi-byte fields are little endian. Parameters travel raw, in the fixed-point formats of the network's
spec: weights, biases and output states as ``int16``; SET values as ``int32``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from poise.firmware.protocol import PROTOCOL_VERSION, ProtocolError
from poise.golden.bundle import spec_sha256
from poise.golden.fixed import FixedPointSpec
from poise.golden.spec import NetworkSpec


class Encoding(enum.IntEnum):
    """How an image's pixels travel (:mod:`poise.firmware.images`)."""

    RAW = 0
    PACKED = 1


class Target(enum.IntEnum):
    """Which parameters ``LOAD_WEIGHTS`` and ``READ_WEIGHTS`` address."""

    WEIGHTS = 0
    BIASES = 1


class Parameter(enum.IntEnum):
    """Runtime parameters that ``SET`` changes (``RESET`` restores learning on and k = 0)."""

    LEARN = 1
    """0 or 1: whether ``TRAIN`` changes the parameters (without it, TRAIN runs the nudged phase only)."""
    LR_SHIFT = 2
    """k, 0 … 15: every learning rate scaled by 2^-k (the golden model's ``lr_shift``)."""


INPUT_MODES = ("current", "spike")
WIRE_BITS = 16
"""Weights, biases and output states travel as int16: a network with wider words cannot use this protocol."""
MAX_READ = 512
"""Most values one ``READ_WEIGHTS`` returns."""

# -- INFO ----------------------------------------------------------------------------------------------------
INFO_HEAD = struct.Struct("<B8sBBB")
"""protocol version, spec digest (first 8 bytes of the spec's SHA-256), input mode, lanes, layer count L."""
INFO_TAIL = struct.Struct("<BBBHHIIH")
"""weight bits, bias bits, state bits, free steps, nudged steps, clock (Hz), baud, largest body."""


@dataclass(frozen=True)
class Info:
    """What ``INFO`` answers: the device's identity and build parameters."""

    protocol_version: int
    spec_digest: bytes
    input_mode: str
    lanes: int
    sizes: tuple[int, ...]
    weight_bits: int
    bias_bits: int
    state_bits: int
    steps_free: int
    steps_nudge: int
    clock_hz: int
    baud: int
    max_body: int

    def encode(self) -> bytes:
        return (INFO_HEAD.pack(self.protocol_version, self.spec_digest, INPUT_MODES.index(self.input_mode),
                               self.lanes, len(self.sizes))
                + struct.pack(f"<{len(self.sizes)}H", *self.sizes)
                + INFO_TAIL.pack(self.weight_bits, self.bias_bits, self.state_bits, self.steps_free,
                                 self.steps_nudge, self.clock_hz, self.baud, self.max_body))

    @classmethod
    def describe(cls, spec: NetworkSpec, fixed: FixedPointSpec, lanes: int, clock_hz: int, baud: int,
                 max_body: int) -> Info:
        """What a device built from ``spec`` and ``fixed`` with these parameters answers."""
        mode = spec.spiking.input_mode if spec.spiking is not None else "current"
        return cls(PROTOCOL_VERSION, bytes.fromhex(spec_sha256(spec, fixed))[:8], mode, lanes, tuple(spec.layers),
                   fixed.weight.width, fixed.bias.width, fixed.state.width, spec.steps_free, spec.steps_nudge,
                   clock_hz, baud, max_body)

    @classmethod
    def decode(cls, payload: bytes) -> Info:
        head = _unpack(INFO_HEAD, payload[:INFO_HEAD.size], "INFO reply", exact=False)
        version, digest, mode, lanes, count = head
        sizes_format = struct.Struct(f"<{count}H")
        expected = INFO_HEAD.size + sizes_format.size + INFO_TAIL.size
        if len(payload) != expected or mode >= len(INPUT_MODES):
            raise ProtocolError(f"malformed INFO reply: {len(payload)} bytes, input mode {mode} "
                                f"(expected {expected} bytes for {count} layers)")
        sizes = sizes_format.unpack_from(payload, INFO_HEAD.size)
        tail = INFO_TAIL.unpack_from(payload, INFO_HEAD.size + sizes_format.size)
        return cls(version, digest, INPUT_MODES[mode], lanes, tuple(sizes), *tail)


# -- STATUS --------------------------------------------------------------------------------------------------
STATUS = struct.Struct("<HHHHHHIB")


@dataclass(frozen=True)
class Status:
    """What ``STATUS`` answers: the error counters (16-bit, saturating), images run since the last reset
    (32-bit, wrapping) and whether learning is on."""

    framing_errors: int
    parity_errors: int
    overruns: int
    bad_frames: int
    long_frames: int
    refused: int
    images: int
    learn: int

    def encode(self) -> bytes:
        return STATUS.pack(self.framing_errors, self.parity_errors, self.overruns, self.bad_frames,
                           self.long_frames, self.refused, self.images, self.learn)

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        return cls(*_unpack(STATUS, payload, "STATUS reply"))


# -- INFER and TRAIN -----------------------------------------------------------------------------------------
INFER_HEAD = struct.Struct("<B")
"""encoding, then the encoded image."""
TRAIN_HEAD = struct.Struct("<BBB")
"""label, flags (bit 0: β negative), encoding, then the encoded image."""
RESULT_HEAD = struct.Struct("<BIIII")
"""prediction, spikes, SynOps, cycles, synapse-lane cycles; then one int16 raw output state per class."""


def infer_request(encoding: Encoding, image: bytes) -> bytes:
    return INFER_HEAD.pack(encoding) + image


def train_request(label: int, beta_negative: bool, encoding: Encoding, image: bytes) -> bytes:
    return TRAIN_HEAD.pack(label, int(beta_negative), encoding) + image


@dataclass(frozen=True)
class ImageResult:
    """What ``INFER`` and ``TRAIN`` answer, all from the free phase (for TRAIN: before the update):
    ``prediction``, the spike and SynOp counts, the image's ``cycles`` and the cycles the synapse lanes
    were busy, and the raw output states."""

    prediction: int
    spikes: int
    synops: int
    cycles: int
    synapse_cycles: int
    outputs: tuple[int, ...]

    def encode(self) -> bytes:
        return (RESULT_HEAD.pack(self.prediction, self.spikes, self.synops, self.cycles, self.synapse_cycles)
                + struct.pack(f"<{len(self.outputs)}h", *self.outputs))

    @classmethod
    def decode(cls, payload: bytes, classes: int) -> ImageResult:
        expected = RESULT_HEAD.size + 2 * classes
        if len(payload) != expected:
            raise ProtocolError(f"malformed image result: {len(payload)} bytes, expected {expected} "
                                f"for {classes} classes")
        head = RESULT_HEAD.unpack_from(payload)
        return cls(*head, struct.unpack_from(f"<{classes}h", payload, RESULT_HEAD.size))


# -- LOAD_WEIGHTS and READ_WEIGHTS ---------------------------------------------------------------------------
ACCESS = struct.Struct("<BBHH")
"""target, layer, first row, first column. Values run along the row and on into the next rows (row-major);
for biases the row is 0 and the column is the neuron's index in layer ``layer`` + 1."""
READ = struct.Struct("<BBHHH")
"""ACCESS, then the number of values to read (1 … MAX_READ)."""
LOADED = struct.Struct("<BBHHH")
"""LOAD_WEIGHTS reply: the request's ACCESS, then the number of values written."""


@dataclass(frozen=True)
class Access:
    """Where a run of parameters starts: weight (``row``, ``col``) of W_``layer``, or bias ``col`` of layer
    ``layer`` + 1."""

    target: Target
    layer: int
    row: int
    col: int

    def pack(self) -> bytes:
        return ACCESS.pack(self.target, self.layer, self.row, self.col)


def load_request(access: Access, values: np.ndarray) -> bytes:
    return access.pack() + np.asarray(values, "<i2").tobytes()


def read_request(access: Access, count: int) -> bytes:
    return READ.pack(access.target, access.layer, access.row, access.col, count)


def decode_values(payload: bytes) -> np.ndarray:
    if len(payload) % 2:
        raise ProtocolError(f"a run of int16 values has an odd length of {len(payload)} bytes")
    return np.frombuffer(payload, "<i2").astype(np.int64)


def decode_loaded(payload: bytes) -> tuple[Access, int]:
    target, layer, row, col, count = _unpack(LOADED, payload, "LOAD_WEIGHTS reply")
    return Access(Target(target), layer, row, col), count


# -- SET -----------------------------------------------------------------------------------------------------
SETTING = struct.Struct("<BBi")
"""parameter, index, value; the reply repeats the request."""


def set_request(parameter: Parameter, index: int, value: int) -> bytes:
    return SETTING.pack(parameter, index, value)


def _unpack(layout: struct.Struct, payload: bytes, what: str, exact: bool = True) -> tuple:
    short, long = len(payload) < layout.size, len(payload) > layout.size
    if short or (exact and long):
        raise ProtocolError(f"malformed {what}: {len(payload)} bytes, expected {layout.size}")
    return layout.unpack_from(payload)
