"""``poise demo``: the main job. The embedded iCEBreaker network on its simulated twin: 1000 real MNIST test
images streamed over the pseudo-terminal, every result checked against the integer golden model.

``poise demo --train`` trains on the twin instead: the network's initial weights (the ones poise's training
started from) are loaded over the link, then the twin learns on chip, batch 1, at 2^-4 of the spec's
batch-20 learning rates, and the test accuracy is measured before and after.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from poise.commands.train import positive_int

TRAIN_LR_SHIFT = 4
"""Batch-1 rates want about 1/20 of the spec's batch-20 ones (docs/FIXED_POINT.md); 2^-4 is the nearest."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the embedded network on the iCEBreaker twin: MNIST, bit-exact")
    parser.add_argument("--board", default="icebreaker", help="the twin's board")
    parser.add_argument("--bundle", type=Path, help="the network (default: the board's embedded one)")
    parser.add_argument("--images", type=positive_int, help="images to stream (default 1000; --train: 1000)")
    parser.add_argument("--train", action="store_true", help="on-chip learning from the initial weights")
    parser.add_argument("--test-images", type=positive_int, default=500,
                        help="with --train: test images measured before and after")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.commands.stream import load_boot_weights, report
    from poise.firmware.driver import PoiseDevice
    from poise.firmware.link import Link, SerialTransport
    from poise.firmware.messages import Encoding
    from poise.firmware.stream import stream
    from poise.golden.data import load_dataset
    from poise.sim.board_twin import board_twin

    started = time.perf_counter()
    dataset = load_dataset("mnist")
    built = board_twin(args.board, args.bundle)
    count = args.images or 1000
    with built.start() as twin:
        link = Link(SerialTransport(twin.port))
        device = PoiseDevice(link)
        info = device.connect()
        device.check_bundle(built.bundle)
        if not args.train:  # --train loads its initial weights itself
            load_boot_weights(device, built.bundle, built.profile)
        print(f"poise demo: {built.bundle.spec.arch} ({built.bundle_path.name}) on the {args.board} twin at "
              f"{twin.port}: {info.lanes} lanes, {info.clock_hz / 1e6:g} MHz, {info.baud} baud")
        if args.train:
            summary = train_demo(device, built.bundle, dataset, count, args.test_images, args.out)
        else:
            from tqdm import tqdm

            images, labels = dataset.test_images[:count], dataset.test_labels[:count]
            with tqdm(total=count, unit="img", desc="MNIST test images") as bar:
                summary = stream(device, built.bundle, images, labels, args.out, encoding=Encoding.PACKED,
                                 check=True, progress=bar)
        link.close()
    report(summary, args.out)
    print(f"demo finished in {time.perf_counter() - started:.0f} s (build and start of the twin included)")
    return 0 if not summary.mismatches and summary.interrupted is None else 1


def train_demo(device, bundle, dataset, count: int, test_images: int, out: Path):  # noqa: ANN001, ANN201
    """Initial weights in, test accuracy, ``count`` training images on chip (checked against the golden
    model), test accuracy again."""
    import numpy as np
    from tqdm import tqdm

    from poise.firmware.messages import Encoding
    from poise.firmware.stream import stream
    from poise.golden.integer import IntegerSpikingModel
    from poise.golden.model import build_model

    initial = IntegerSpikingModel.from_float(bundle.spec, build_model(bundle.spec).params, bundle.fixed)
    print(f"loading the initial weights ({sum(w.size for w in initial.weights)} weights) over the link")
    device.load_parameters(initial.weights, initial.biases)
    test = dataset.test_images[:test_images], dataset.test_labels[:test_images]

    def test_accuracy() -> float:
        predictions = [device.infer(image).prediction for image in tqdm(test[0], unit="img", desc="test",
                                                                          leave=False)]
        return float(np.mean(np.array(predictions) == test[1]))

    before = test_accuracy()
    print(f"test accuracy before training: {100 * before:.1f}% ({test_images} test images)")
    with tqdm(total=count, unit="img", desc="training on chip") as bar:
        summary = stream(device, bundle, dataset.train_images[:count], dataset.train_labels[:count], out,
                         train=True, encoding=Encoding.PACKED, check=True, lr_shift=TRAIN_LR_SHIFT, initial=initial,
                         progress=bar)
    after = test_accuracy()
    print(f"test accuracy after {count} training images: {100 * after:.1f}% (was {100 * before:.1f}%)")
    return summary
