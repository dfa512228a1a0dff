# amaranth: UnusedElaboratable=no
"""The command controller and a small network core in Amaranth's simulator, byte for byte against the
reference device (docs/PROTOCOL.md in Python): every request kind, every refusal, repeated requests, failed
frames, and the weights after on-chip training."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from poise.firmware.framing import FrameSplitter, pack_frame, unpack_frame
from poise.firmware.images import encode_image
from poise.firmware.messages import (
    RESULT_HEAD,
    Access,
    Encoding,
    Parameter,
    Target,
    infer_request,
    load_request,
    read_request,
    set_request,
    train_request,
)
from poise.firmware.protocol import ErrorCode, Opcode, decode_packet, encode_packet
from poise.firmware.reference import ReferenceDevice
from poise.golden.bundle import Bundle
from poise.golden.fixed import derive_fixed_spec
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.spec import SpikingOptions, default_spec
from poise.rtl.controller import CommandController
from poise.rtl.core import NetworkCore
from poise.rtl.geometry import CoreGeometry
from poise.rtl.soc import SoCConfig, device_info

CONFIG = SoCConfig(clock_hz=24_000_000, baud=3_000_000, lanes=2, max_body=300)


def small_params(spec) -> dict[str, np.ndarray]:
    """The float parameters of ``spec``'s network, weights tripled (more spikes, more learning)."""
    params = build_model(spec).params
    return {name: value * 3 if name.startswith("w") else value for name, value in params.items()}


def small_model(mode: str = "current") -> IntegerSpikingModel:
    """A 12-7-3 network with short phases and fast learning: every image changes weights."""
    spec = default_spec("spiking", (12, 7, 3)).replace(steps_free=6, steps_nudge=3, seed=5,
                                                       spiking=SpikingOptions(input_mode=mode))
    spec = spec.replace(learning_rates=tuple(30 * rate for rate in spec.learning_rates))
    params = small_params(spec)
    return IntegerSpikingModel.from_float(spec, params, derive_fixed_spec(spec, params, learning=True))


class Bench(wiring.Component):
    """The controller and its core, without the UART: bytes in on ``rx``, bytes out on ``tx``."""

    def __init__(self, model: IntegerSpikingModel) -> None:
        geometry = CoreGeometry(model.spec, model.fixed, CONFIG.lanes)
        self.controller = CommandController(geometry, device_info(geometry, CONFIG).encode(), CONFIG.max_body)
        self.core = NetworkCore(geometry, model.weights, model.biases)
        super().__init__({})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.controller = controller = self.controller
        m.submodules.core = core = self.core
        for name in ("command", "pixels", "parameter_request"):
            wiring.connect(m, getattr(controller, name), getattr(core, name))
        for name in ("result", "parameter_response"):
            wiring.connect(m, getattr(core, name), getattr(controller, name))
        return m


def run_bench(model: IntegerSpikingModel, wire: bytes, cycle_limit: int = 400_000) -> bytes:
    """Feeds ``wire`` into the controller (one byte per 4 cycles at most) and returns what it sends."""
    dut = Bench(model)
    out = bytearray()
    rx, tx = dut.controller.rx, dut.controller.tx

    async def bench(ctx):
        index, idle = 0, 0
        ctx.set(tx.ready, 1)
        for _ in range(cycle_limit):
            if index < len(wire):
                ctx.set(rx.valid, 1)
                ctx.set(rx.payload, wire[index])
            else:
                ctx.set(rx.valid, 0)
            _, _, taken, sent, byte, busy = await ctx.tick().sample(rx.ready, tx.valid, tx.payload,
                                                                      dut.controller.busy)
            if index < len(wire) and taken:
                index += 1
            if sent:
                out.append(byte)
            idle = idle + 1 if (index == len(wire) and not busy and not sent) else 0
            if idle > 50:
                return
        raise AssertionError(f"the controller did not finish within {cycle_limit} cycles")

    sim = Simulator(dut)
    sim.add_clock(1 / CONFIG.clock_hz)
    sim.add_testbench(bench)
    sim.run()
    return bytes(out)


def frame(sequence: int, opcode: int, payload: bytes = b"") -> bytes:
    return pack_frame(encode_packet(sequence, opcode, payload))


def replies(wire: bytes) -> list:
    return [decode_packet(unpack_frame(f)) for f in FrameSplitter().feed(wire)]


def scenario(model: IntegerSpikingModel) -> list[bytes]:
    """Every command and every refusal, repeated requests and failed frames, in one byte stream (one entry
    per frame, so a mismatch can name the request)."""
    rng = np.random.default_rng(11)
    n_in, n_out = model.spec.layers[0], model.spec.layers[-1]
    images = rng.integers(0, 256, (6, n_in)).astype(np.uint8)
    images[images < 100] = 0
    images[5] = 0
    raw, packed = Encoding.RAW, Encoding.PACKED
    w1 = Access(Target.WEIGHTS, 1, 0, 1)
    flipped = bytearray(frame(40, Opcode.INFER, infer_request(raw, images[0].tobytes())))
    flipped[7] ^= 0x10
    frames = [
        frame(1, Opcode.INFO), frame(2, Opcode.STATUS),
        frame(3, Opcode.INFER, infer_request(raw, images[0].tobytes())),
        frame(4, Opcode.INFER, infer_request(packed, encode_image(images[1], packed))),
        frame(5, Opcode.INFER, infer_request(packed, encode_image(images[5], packed))),
        frame(6, Opcode.TRAIN, train_request(1, False, packed, encode_image(images[2], packed))),
        frame(6, Opcode.TRAIN, train_request(1, False, packed, encode_image(images[2], packed))),  # repeated
        frame(7, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, 2)),
        frame(8, Opcode.TRAIN, train_request(2, True, raw, images[3].tobytes())),
        frame(9, Opcode.SET, set_request(Parameter.LEARN, 0, 0)),
        frame(10, Opcode.TRAIN, train_request(0, False, packed, encode_image(images[4], packed))),
        frame(11, Opcode.SET, set_request(Parameter.LEARN, 0, 1)),
        frame(12, Opcode.READ_WEIGHTS, read_request(Access(Target.WEIGHTS, 0, 0, 0), n_in * model.spec.layers[1])),
        frame(13, Opcode.READ_WEIGHTS, read_request(Access(Target.BIASES, 1, 0, 0), n_out)),
        frame(14, Opcode.READ_WEIGHTS, read_request(Access(Target.WEIGHTS, 1, 1, 2), 5)),
        frame(15, Opcode.LOAD_WEIGHTS, load_request(w1, np.array([5, -7, 0, model.fixed.weight.min_raw]))),
        frame(16, Opcode.READ_WEIGHTS, read_request(w1, 4)),
        frame(17, Opcode.LOAD_WEIGHTS, load_request(w1, np.array([1, model.fixed.weight.max_raw + 1]))),
        frame(18, Opcode.LOAD_WEIGHTS, load_request(Access(Target.WEIGHTS, 1, 6, 1), np.array([1, 2, 3]))),
        frame(19, Opcode.LOAD_WEIGHTS, load_request(Access(Target.BIASES, 2, 0, 0), np.array([1]))),
        frame(20, Opcode.READ_WEIGHTS, read_request(w1, 0)),
        frame(21, Opcode.READ_WEIGHTS, read_request(w1, 513)),
        frame(22, 0x42), frame(23, Opcode.INFO | 0x80), frame(24, Opcode.INFO, b"x"),
        pack_frame(bytes((2, 25, Opcode.INFO))),
        frame(26, Opcode.SET, b"\x01\x00\x00\x00\x00"),
        frame(27, Opcode.TRAIN, train_request(n_out, False, raw, images[0].tobytes())),
        frame(28, Opcode.TRAIN, bytes((0, 2, raw)) + images[0].tobytes()),
        frame(29, Opcode.INFER, bytes((2,)) + images[0].tobytes()),
        frame(30, Opcode.INFER, infer_request(raw, images[0].tobytes()[:-1])),
        frame(31, Opcode.INFER, infer_request(packed, encode_image(images[1], packed) + b"\x07")),
        frame(32, Opcode.INFER, infer_request(packed, b"\x00\x00" + b"\x01" * n_in)),
        frame(33, Opcode.INFER, infer_request(packed, b"\x00" + bytes((n_in - 1,)) + b"\x00")),
        frame(34, Opcode.SET, set_request(Parameter.LEARN, 0, 2)),
        frame(35, Opcode.SET, set_request(Parameter.LR_SHIFT, 0, 16)),
        frame(36, Opcode.SET, set_request(Parameter(1), 1, 1)),
        frame(37, Opcode.LOAD_WEIGHTS, load_request(w1, np.array([1]))[:-1]),
        bytes(flipped),  # a bad CRC with a readable header
        frame(41, Opcode.INFER, infer_request(raw, images[0].tobytes()))[:9] + b"\x00",  # truncated
        b"\x03\x11\x00",  # too short to answer
        pack_frame(bytes((1, 42, Opcode.LOAD_WEIGHTS)) + bytes(range(1, 255)) * 2),  # longer than the buffer
        b"\x00\x00",
        # The last executed request again, now well-formed: answered from the stored reply (an error), not
        # executed, although failed frames came in between.
        frame(37, Opcode.LOAD_WEIGHTS, load_request(w1, np.array([1]))),
        frame(43, Opcode.RESET),
        frame(44, Opcode.TRAIN, train_request(1, False, packed, encode_image(images[2], packed))),
        frame(45, Opcode.STATUS),
    ]
    return frames


def mask_cycles(packet) -> tuple:
    """A reply without the fields only the gateware knows (an image result's cycle counts)."""
    payload = packet.payload
    if packet.opcode in (Opcode.INFER | 0x80, Opcode.TRAIN | 0x80):
        payload = payload[:9] + bytes(8) + payload[17:]
    return packet.sequence, packet.opcode, payload


def test_controller_answers_byte_for_byte_like_the_reference_device():
    model = small_model()
    bundle = Bundle(model.spec, small_params(model.spec), fixed=model.fixed)
    reference = ReferenceDevice(bundle, lanes=CONFIG.lanes, clock_hz=CONFIG.clock_hz, baud=CONFIG.baud,
                                max_body=CONFIG.max_body)
    frames = scenario(model)
    expected = [packet for f in frames for packet in replies(reference.feed(f))]
    got = replies(run_bench(model, b"".join(frames), cycle_limit=2_000_000))
    assert len(got) == len(expected), f"{len(got)} replies, the reference gives {len(expected)}"
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert mask_cycles(mine) == mask_cycles(theirs), f"reply {index} (sequence {theirs.sequence}) differs"
    results = [p for p in got if p.opcode in (Opcode.INFER | 0x80, Opcode.TRAIN | 0x80)]
    assert all(RESULT_HEAD.unpack_from(p.payload)[3] > 0 for p in results), "every result counts its cycles"
    kinds = {p.opcode for p in got} | {p.payload[0] for p in got if p.opcode == Opcode.ERROR}
    assert {Opcode.ERROR, *ErrorCode} - {ErrorCode.BUSY} <= kinds, "the scenario reaches every error code"
    changed = sum(int((a != b).sum()) for a, b in zip(reference.model.weights, model.weights, strict=True))
    assert changed > 0, "on-chip training changed no weight: the comparison would not see a learning bug"


def test_stored_replies_from_each_sender_area_survive_failed_frames():
    """INFO's reply lives in its own area of the sender's buffer, the answers to failed frames in another:
    repeated requests around failed frames still get their stored reply, as the reference device does."""
    model = small_model()
    bundle = Bundle(model.spec, small_params(model.spec), fixed=model.fixed)
    reference = ReferenceDevice(bundle, lanes=CONFIG.lanes, clock_hz=CONFIG.clock_hz, baud=CONFIG.baud,
                                max_body=CONFIG.max_body)
    bad = bytearray(frame(9, Opcode.STATUS))
    bad[-2] ^= 0x01 if bad[-2] != 0x01 else 0x02  # a CRC byte: the header still reads
    frames = [frame(1, Opcode.INFO), bytes(bad), frame(1, Opcode.INFO), frame(2, Opcode.STATUS), bytes(bad),
              frame(2, Opcode.STATUS), frame(3, Opcode.INFO), frame(4, Opcode.INFO), bytes(bad),
              frame(4, Opcode.INFO), frame(5, Opcode.SET, set_request(Parameter.LEARN, 0, 1)), bytes(bad),
              frame(4, Opcode.INFO), frame(6, Opcode.STATUS)]
    expected = [packet for f in frames for packet in replies(reference.feed(f))]
    got = replies(run_bench(model, b"".join(frames)))
    assert got == expected
    assert [p.opcode for p in got].count(Opcode.ERROR) == 4


def test_read_runs_leaving_the_matrix_are_refused_with_the_next_request_queued():
    """A READ_WEIGHTS run is checked as it is read: one that leaves the matrix is refused (after values were
    read), and the request already waiting behind it is still answered."""
    model = small_model()
    bundle = Bundle(model.spec, small_params(model.spec), fixed=model.fixed)
    reference = ReferenceDevice(bundle, lanes=CONFIG.lanes, clock_hz=CONFIG.clock_hz, baud=CONFIG.baud,
                                max_body=CONFIG.max_body)
    rows, cols = model.spec.layers[1], model.spec.layers[2]
    w0 = Access(Target.WEIGHTS, 0, 0, 0)
    frames = [frame(1, Opcode.READ_WEIGHTS, read_request(Access(Target.WEIGHTS, 1, rows - 1, 1), cols)),
              frame(2, Opcode.STATUS),
              frame(3, Opcode.READ_WEIGHTS, read_request(Access(Target.BIASES, 0, 0, rows - 2), 3)),
              frame(4, Opcode.INFO),
              frame(5, Opcode.READ_WEIGHTS, read_request(Access(Target.WEIGHTS, 1, rows - 1, 0), cols)),
              frame(5, Opcode.READ_WEIGHTS, read_request(Access(Target.WEIGHTS, 1, rows - 1, 0), cols)),
              frame(6, Opcode.READ_WEIGHTS, read_request(w0, model.spec.layers[0] * rows + 1)),
              frame(7, Opcode.STATUS)]
    expected = [packet for f in frames for packet in replies(reference.feed(f))]
    got = replies(run_bench(model, b"".join(frames)))
    assert got == expected
    assert [p.payload[0] for p in got if p.opcode == Opcode.ERROR] == [ErrorCode.OUT_OF_RANGE] * 3
