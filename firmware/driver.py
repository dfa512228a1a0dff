"""The host's view of a poise device (a board, its twin, or the in-process reference device): one method per
command of docs/PROTOCOL.md, over a :class:`~poise.firmware.link.Link`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from poise.firmware.images import encode_image
from poise.firmware.link import Link, LinkError
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
from poise.firmware.protocol import HEADER, PROTOCOL_VERSION, Opcode, ProtocolError
from poise.golden.bundle import Bundle, spec_sha256

LOAD_OVERHEAD = HEADER.size + 6


class DeviceMismatchError(LinkError):
    """The device runs another network than the bundle the host was given."""


class PoiseDevice:
    """A connected device. :meth:`connect` asks INFO first (and refuses other protocol versions); the other
    methods need it. Images are uint8 pixel rows; parameters raw integers of the network's formats."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._info: Info | None = None

    @property
    def info(self) -> Info:
        if self._info is None:
            raise LinkError("connect() first: the device's INFO is not known yet")
        return self._info

    def connect(self) -> Info:
        info = Info.decode(self.link.request(Opcode.INFO))
        if info.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(f"the device speaks protocol version {info.protocol_version}, this host "
                                f"{PROTOCOL_VERSION}: update poise or rebuild the bitstream")
        self._info = info
        return info

    def check_bundle(self, bundle: Bundle) -> None:
        """Refuses a device whose network (spec digest and sizes) is not ``bundle``'s."""
        digest = bytes.fromhex(spec_sha256(bundle.spec, bundle.fixed))[:8]
        if digest != self.info.spec_digest or tuple(bundle.spec.layers) != self.info.sizes:
            raise DeviceMismatchError(
                f"the device runs network {'-'.join(map(str, self.info.sizes))} with spec digest "
                f"{self.info.spec_digest.hex()}, the bundle is {bundle.spec.arch} with {digest.hex()}: build and "
                "flash the bitstream from this bundle (or pass the bundle the device was built from)")

    @property
    def classes(self) -> int:
        return self.info.sizes[-1]

    # -- images -------------------------------------------------------------------------------------------
    @staticmethod
    def infer_payload(pixels: np.ndarray, encoding: Encoding) -> bytes:
        return infer_request(encoding, encode_image(pixels, encoding))

    def train_payload(self, pixels: np.ndarray, label: int, beta_negative: bool, encoding: Encoding) -> bytes:
        return train_request(label, beta_negative, encoding, encode_image(pixels, encoding))

    def infer(self, pixels: np.ndarray, encoding: Encoding = Encoding.PACKED) -> ImageResult:
        return ImageResult.decode(self.link.request(Opcode.INFER, self.infer_payload(pixels, encoding)), self.classes)

    def train(self, pixels: np.ndarray, label: int, beta_negative: bool = False,
              encoding: Encoding = Encoding.PACKED) -> ImageResult:
        payload = self.train_payload(pixels, label, beta_negative, encoding)
        return ImageResult.decode(self.link.request(Opcode.TRAIN, payload), self.classes)

    def submit(self, opcode: Opcode, payload: bytes) -> int:
        """Sends an INFER (or TRAIN) request without waiting; :meth:`collect` its result in order."""
        return self.link.submit(opcode, payload)

    def collect(self, sequence: int) -> ImageResult:
        return ImageResult.decode(self.link.collect(sequence), self.classes)

    # -- parameters ---------------------------------------------------------------------------------------
    def shapes(self) -> list[tuple[int, int]]:
        sizes = self.info.sizes
        return [(sizes[k], sizes[k + 1]) for k in range(len(sizes) - 1)]

    def read_parameters(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every weight matrix and bias vector, read in runs of up to MAX_READ values."""
        weights = [self._read(Target.WEIGHTS, layer, rows * cols).reshape(rows, cols)
                   for layer, (rows, cols) in enumerate(self.shapes())]
        biases = [self._read(Target.BIASES, layer, cols) for layer, (_, cols) in enumerate(self.shapes())]
        return weights, biases

    def _read(self, target: Target, layer: int, total: int) -> np.ndarray:
        cols = self.shapes()[layer][1]
        values = []
        for start in range(0, total, MAX_READ):
            count = min(MAX_READ, total - start)
            access = Access(target, layer, start // cols, start % cols)
            values.append(decode_values(self.link.request(Opcode.READ_WEIGHTS, read_request(access, count))))
        return np.concatenate(values)

    def load_parameters(self, weights: list[np.ndarray], biases: list[np.ndarray],
                        progress: Callable[[int], object] | None = None) -> None:
        """Writes every weight and bias, in runs as long as a packet holds; ``progress`` is told the number of
        values of each run written."""
        chunk = (self.info.max_body - LOAD_OVERHEAD) // 2
        for target, arrays in ((Target.WEIGHTS, weights), (Target.BIASES, biases)):
            for layer, array in enumerate(arrays):
                flat, cols = np.asarray(array).ravel(), self.shapes()[layer][1]
                for start in range(0, len(flat), chunk):
                    access = Access(target, layer, start // cols, start % cols)
                    values = flat[start:start + chunk]
                    answered, count = decode_loaded(self.link.request(Opcode.LOAD_WEIGHTS,
                                                                      load_request(access, values)))
                    if answered != access or count != len(values):
                        raise ProtocolError(f"LOAD_WEIGHTS of {len(values)} values at {access} was answered with "
                                            f"{count} values at {answered}")
                    if progress is not None:
                        progress(len(values))

    # -- settings -------------------------------------------------------------------------------------------
    def set(self, parameter: Parameter, value: int, index: int = 0) -> None:
        request = set_request(parameter, index, value)
        reply = self.link.request(Opcode.SET, request)
        if reply != request:
            raise ProtocolError(f"SET was answered with {reply.hex()}, not its own payload {request.hex()}")

    def reset(self) -> None:
        self.link.request(Opcode.RESET)

    def status(self) -> Status:
        return Status.decode(self.link.request(Opcode.STATUS))
