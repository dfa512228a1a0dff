"""``poise selftest``: bring-up checks of a board (or its twin) over its serial port: INFO and the spec digest,
the UART error counters, ten known images against the integer golden model, round-trip latency and
images/s."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from poise.commands.stream import add_keep_weights

IMAGES = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("selftest", help="bring-up self-test of a board over its serial port")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the board's serial port, e.g. /dev/ttyUSB1")
    where.add_argument("--twin", metavar="BOARD", help="start BOARD's twin and test it")
    parser.add_argument("--board", default="icebreaker", help="board profile (baud, embedded bundle)")
    parser.add_argument("--bundle", type=Path, help="the network the board was built with")
    add_keep_weights(parser)
    parser.add_argument("--baud", type=int)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.commands.stream import open_device

    args.reference = False
    with open_device(args) as (device, bundle, where):
        problems = selftest(device, bundle, where)
    print("selftest PASSED" if not problems else "selftest FAILED:\n  " + "\n  ".join(problems))
    return 0 if not problems else 1


def selftest(device: Any, bundle: Any, where: str) -> list[str]:
    """Runs the checks, printing each; returns the problems found (empty: all passed)."""
    import numpy as np

    from poise.firmware.messages import Encoding
    from poise.golden.data import load_dataset
    from poise.golden.integer import IntegerSpikingModel

    problems: list[str] = []
    info = device.info  # connect() and check_bundle() already passed: the digest and sizes match
    print(f"INFO from {where}: protocol {info.protocol_version}, {'-'.join(map(str, info.sizes))}, spec digest "
          f"{info.spec_digest.hex()} (matches {bundle.spec.arch}), {info.lanes} lanes, {info.clock_hz / 1e6:g} MHz, "
          f"{info.baud} baud")
    status = device.status()
    print(f"UART errors since power-up: {status.framing_errors} framing, {status.parity_errors} parity, "
          f"{status.overruns} overruns; {status.bad_frames} bad and {status.long_frames} long frames")
    if status.framing_errors or status.parity_errors or status.overruns:
        problems.append("the UART has seen line errors: check the baud rate, the wiring and the ground")
    mnist = load_dataset("mnist")
    images, labels = mnist.test_images[:IMAGES], mnist.test_labels[:IMAGES]
    golden = IntegerSpikingModel.from_bundle(bundle).infer(images)
    latencies, results = [], []
    for image in images:
        started = time.perf_counter()
        results.append(device.infer(image, Encoding.PACKED))
        latencies.append(time.perf_counter() - started)
    wrong = [k for k, r in enumerate(results) if (r.prediction, r.spikes, r.synops, tuple(r.outputs)) != (
        golden.predictions[k], golden.spikes[k], golden.synops[k], tuple(int(v) for v in golden.outputs[k]))]
    if wrong:
        problems.append(f"images {wrong} differ from the integer golden model")
    correct = int(sum(r.prediction == label for r, label in zip(results, labels, strict=True)))
    print(f"{IMAGES} known images: {IMAGES - len(wrong)} equal to the golden model, {correct} classified correctly; "
          f"round trip {1000 * float(np.median(latencies)):.1f} ms (median), {1 / float(np.mean(latencies)):.1f} "
          f"images/s one at a time, {float(np.mean([r.cycles for r in results])):.0f} cycles per image")
    return problems
