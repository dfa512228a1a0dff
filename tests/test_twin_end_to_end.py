"""End to end: the iCEBreaker SoC with the embedded network, verilated, behind a real pseudo-terminal.

- 50 MNIST test images streamed as a user streams them (``poise.firmware.stream``), every result equal to
  the integer golden model's;
- a protocol fuzz: thousands of random, mutated, truncated and oversize frames, each sent to the twin and to
  the reference device, every reply equal byte for byte (cycle counts aside); then a short on-chip training
  run the same way, and every weight and bias read back equal to the reference model's.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator

import numpy as np
import pytest
import serial

from poise.commands.stream import load_boot_weights
from poise.firmware.driver import PoiseDevice
from poise.firmware.framing import FrameSplitter, pack_frame, unpack_frame
from poise.firmware.images import encode_image
from poise.firmware.link import Link, SerialTransport
from poise.firmware.messages import (
    MAX_READ,
    Access,
    Encoding,
    Parameter,
    Target,
    infer_request,
    read_request,
    set_request,
    train_request,
)
from poise.firmware.protocol import Opcode, decode_packet, encode_packet
from poise.firmware.reference import ReferenceDevice
from poise.firmware.stream import stream
from poise.golden.data import load_dataset
from poise.golden.integer import IntegerSpikingModel
from poise.sim.board_twin import board_twin, twin_config


@pytest.fixture(scope="module")
def built():
    return board_twin("icebreaker", say=lambda message: None)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def test_fifty_mnist_images_through_the_twin_equal_the_golden_model(built, mnist, tmp_path):
    with built.start() as twin:
        link = Link(SerialTransport(twin.port), timeout=10)
        device = PoiseDevice(link)
        device.connect()
        device.check_bundle(built.bundle)
        load_boot_weights(device, built.bundle, built.profile)
        summary = stream(device, built.bundle, mnist.test_images[:50], mnist.test_labels[:50], tmp_path,
                         encoding=Encoding.PACKED, check=True)
        link.close()
    assert summary.images == 50 and summary.checked
    assert summary.mismatches == []
    assert summary.mean_cycles > 0
    assert (tmp_path / "confusion.png").stat().st_size > 0
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 50


def mask_cycles(packet) -> tuple:
    payload = packet.payload
    if packet.opcode in (Opcode.INFER | 0x80, Opcode.TRAIN | 0x80):
        payload = payload[:9] + bytes(8) + payload[17:]
    return packet.sequence, packet.opcode, payload


class Twinned:
    """Sends each frame to the twin and to the reference device and checks that both answer the same. A frame
    the reference does not answer is followed at once by the next, as a host would; a reply the twin sends
    that the reference does not shows up as a mismatch at the next exchange."""

    def __init__(self, port: serial.Serial, reference: ReferenceDevice) -> None:
        self.port, self.reference, self.splitter = port, reference, FrameSplitter()
        self.exchanged = 0

    def send(self, data: bytes, what: str) -> None:
        expected = [decode_packet(unpack_frame(f)) for f in FrameSplitter().feed(self.reference.feed(data))]
        self.port.write(data)
        got: list = []
        deadline = time.monotonic() + 20
        while len(got) < len(expected):
            assert time.monotonic() < deadline, f"{what}: no reply from the twin within 20 s"
            chunk = self.port.read(max(1, self.port.in_waiting))
            got += [decode_packet(unpack_frame(f)) for f in self.splitter.feed(chunk)]
        assert [mask_cycles(p) for p in got] == [mask_cycles(p) for p in expected], what
        self.exchanged += len(got)


@contextlib.contextmanager
def loaded_port(built, path: str) -> Iterator[serial.Serial]:
    """The twin's port, opened raw after the host has loaded the weights (as it does on the board)."""
    with Link(SerialTransport(path), timeout=10) as link:
        device = PoiseDevice(link)
        device.connect()
        load_boot_weights(device, built.bundle, built.profile)
    with serial.Serial(path, timeout=0.05) as port:
        yield port


def fuzz_frames(rng: np.random.Generator, image: np.ndarray, count: int) -> list[bytes]:
    """Random garbage, well-formed requests with random fields, and damaged copies of both (bit flips,
    truncations, cut and spliced frames, oversize ones). No LOAD or TRAIN: the weights must not change."""
    def request() -> bytes:
        choices = [Opcode.INFO, Opcode.STATUS, Opcode.SET, Opcode.READ_WEIGHTS, Opcode.INFER, Opcode.RESET,
                   0x00, 0x09, 0x42, 0x81, 0x7F]
        opcode = int(rng.choice(choices, p=[.2, .15, .15, .2, .03, .07] + [.04] * 5))
        payload = {
            Opcode.SET: lambda: set_request(Parameter(int(rng.integers(1, 3))), int(rng.integers(0, 2)),
                                            int(rng.integers(-2, 18))),
            Opcode.READ_WEIGHTS: lambda: read_request(Access(Target(int(rng.integers(0, 2))), int(rng.integers(0, 3)),
                                                             int(rng.integers(0, 800)), int(rng.integers(0, 130))),
                                                      int(rng.integers(0, 40))),
            Opcode.INFER: lambda: infer_request(Encoding.PACKED, encode_image(image, Encoding.PACKED)),
        }.get(opcode, lambda: rng.bytes(int(rng.integers(0, 6))))()
        return encode_packet(int(rng.integers(0, 256)), opcode, payload)

    frames = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.15:  # garbage, with zeros in it
            data = bytearray(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes())
            frames.append(bytes(data) + b"\x00")
            continue
        data = bytearray(pack_frame(request()))
        if kind < 0.55:
            frames.append(bytes(data))
        elif kind < 0.75:  # bit flips
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data) - 1))] ^= 1 << int(rng.integers(0, 8))
            frames.append(bytes(data))
        elif kind < 0.9:  # cut short, or cut and followed by the start of another frame
            cut = int(rng.integers(1, len(data)))
            frames.append(bytes(data[:cut]) + (b"\x00" if rng.random() < 0.5 else b""))
        elif kind < 0.97:  # inserted or deleted bytes
            index = int(rng.integers(0, len(data) - 1))
            data[index:index + 1] = b"" if rng.random() < 0.5 else rng.bytes(int(rng.integers(1, 4)))
            frames.append(bytes(data))
        else:  # oversize
            frames.append(bytes(rng.integers(1, 256, 2100, dtype=np.uint8).tobytes()) + b"\x00")
    return frames


def test_fuzz_then_training_answer_like_the_reference_and_keep_the_weights_exact(built, mnist):
    rng = np.random.default_rng(2026)
    soc = twin_config(built.profile)
    reference = ReferenceDevice(built.bundle, soc.lanes, soc.clock_hz, soc.baud, soc.max_body)
    with built.start() as twin, loaded_port(built, twin.port) as port:
        twinned = Twinned(port, reference)
        for index, data in enumerate(fuzz_frames(rng, mnist.test_images[0], 2500)):
            twinned.send(data, f"fuzz frame {index}: {data[:40].hex()}")
        twinned.send(b"\x00", "a delimiter to end any cut frame")
        # Bytes that arrive while the core computes: an image, garbage and a request in one write.
        image = infer_request(Encoding.PACKED, encode_image(mnist.test_images[1], Encoding.PACKED))
        for sequence in range(100, 110):
            burst = (pack_frame(encode_packet(sequence, Opcode.INFER, image)) + rng.bytes(30) + b"\x00"
                     + pack_frame(encode_packet(sequence + 50, Opcode.STATUS)))
            twinned.send(burst, f"INFER {sequence} with garbage and STATUS behind it")
        twinned.send(pack_frame(encode_packet(200, Opcode.INFO)), "INFO after the fuzz")
        twinned.send(pack_frame(encode_packet(201, Opcode.RESET)), "RESET")
        # A short on-chip training run: images the network gets wrong, so weights do change.
        wrong = np.flatnonzero(reference.model.infer(mnist.train_images[:300]).predictions != mnist.train_labels[:300])
        for sequence, index in enumerate(wrong[:6], start=202):
            request = train_request(int(mnist.train_labels[index]), bool(sequence % 2), Encoding.PACKED,
                                    encode_image(mnist.train_images[index], Encoding.PACKED))
            twinned.send(pack_frame(encode_packet(sequence, Opcode.TRAIN, request)), f"training image {index}")
        twinned.send(pack_frame(encode_packet(220, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, 3))), "SET")
        # Every weight and bias, read back in runs: the reference's replies are its model's values.
        sequence = 0
        for layer, (rows, cols) in enumerate(itertools.pairwise(built.bundle.spec.layers)):
            for target, total in ((Target.WEIGHTS, rows * cols), (Target.BIASES, cols)):
                for start in range(0, total, MAX_READ):
                    access = Access(target, layer, start // cols, start % cols)
                    request = read_request(access, min(MAX_READ, total - start))
                    twinned.send(pack_frame(encode_packet(sequence, Opcode.READ_WEIGHTS, request)),
                                 f"READ_WEIGHTS {access}")
                    sequence = (sequence + 1) % 200
        twinned.send(pack_frame(encode_packet(221, Opcode.STATUS)), "STATUS at the end")
    initial = IntegerSpikingModel.from_bundle(built.bundle).weights
    changed = sum(int((a != b).sum()) for a, b in zip(reference.model.weights, initial, strict=True))
    assert changed > 0, "training changed no weight: the read-back would not see a learning bug"
    assert reference.status.bad_frames > 100 and reference.status.refused > 100, "the fuzz reached the refusals"



def test_selftest_passes_on_the_twin(built):
    from run_cli import poise

    status, out, err = poise("selftest", "--twin", "icebreaker")
    assert status == 0, err
    assert "10 known images: 10 equal to the golden model" in out and "selftest PASSED" in out
    assert "0 framing, 0 parity, 0 overruns" in out
    assert "loading 784-128-10 (the icebreaker starts without W₀)" in err  # the progress bar


def test_the_icebreaker_twin_starts_without_w0_as_the_board_does(built):
    """Without the load the twin holds no W₀ (the SPRAM the bitstream cannot initialise): the known images
    come out wrong, which is what a board whose host skipped the load would show."""
    from run_cli import poise

    status, out, err = poise("selftest", "--twin", "icebreaker", "--keep-weights")
    assert status == 1 and "differ from the integer golden model" in out and "selftest FAILED" in out, out + err


def test_poise_twin_announces_its_port_and_stops_cleanly_on_ctrl_c(built, tmp_path):
    import signal
    import subprocess
    import sys

    link = tmp_path / "ttyPOISE"
    command = [sys.executable, "-m", "poise", "twin", "--board", "icebreaker", "--link", str(link)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            lines = [process.stdout.readline()]  # what it builds, if anything, then the port
            while lines[-1] and f"on {link}" not in lines[-1] and len(lines) < 4:
                lines.append(process.stdout.readline())
            assert f"on {link}" in lines[-1], "".join(lines)
            with serial.Serial(str(link), timeout=5) as port:
                port.write(pack_frame(encode_packet(9, Opcode.INFO)))
                reply = FrameSplitter()
                frames: list[bytes] = []
                deadline = time.monotonic() + 10
                while not frames and time.monotonic() < deadline:
                    frames = reply.feed(port.read(max(1, port.in_waiting)))
            assert decode_packet(unpack_frame(frames[0])).opcode == Opcode.INFO | 0x80
        finally:
            process.send_signal(signal.SIGINT)
            status = process.wait(timeout=20)
    assert status == 0 and not link.exists()
