"""``poise stream``: a dataset through a board (``--port``), its twin (``--twin BOARD``) or the in-process
reference device (``--reference``), for inference or on-chip training."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from poise.commands.train import positive_int
from poise.errors import PoiseError

ENCODINGS = ("packed", "raw")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stream", help="stream a dataset to a board, its twin or the reference device")
    add_stream_options(parser)
    parser.set_defaults(func=run)


def add_stream_options(parser: argparse.ArgumentParser, *, device_required: bool = True) -> None:
    where = parser.add_mutually_exclusive_group(required=device_required)
    where.add_argument("--port", help="serial port of a flashed board, e.g. /dev/ttyUSB1")
    where.add_argument("--twin", metavar="BOARD", help="start BOARD's simulated twin and stream to it")
    where.add_argument("--reference", action="store_true",
                       help="the in-process reference device (the protocol in Python, no timing)")
    parser.add_argument("--board", default="icebreaker", help="board profile for --reference and --port (baud)")
    parser.add_argument("--bundle", type=Path, help="the network the device runs (default: the board's embedded one)")
    parser.add_argument("--baud", type=int, help="serial baud rate (default: the board profile's)")
    add_keep_weights(parser)
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument("--split", choices=("test", "train"), help="default: test for inference, train for --train")
    parser.add_argument("--limit", type=positive_int, help="stream only the first N images")
    parser.add_argument("--train", action="store_true", help="TRAIN: on-chip learning, one image at a time")
    parser.add_argument("--lr-shift", type=int, help="with --train: scale the learning rates by 2^-K on the device")
    parser.add_argument("--encoding", choices=ENCODINGS, default="packed", help="image encoding on the wire")
    parser.add_argument("--check", action="store_true", help="compare every result with the integer golden model")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply")
    parser.add_argument("--out", type=Path, default=Path("runs/stream"), help="results.jsonl, summary.json, PNGs")


def add_keep_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-weights", action="store_true",
                        help="a board whose W₀ the bitstream cannot hold (the iCEBreaker's SPRAM) gets the bundle's "
                             "weights loaded on connecting; this keeps what it holds (what it learned since)")


def load_boot_weights(device: Any, bundle: Any, profile: Any, keep: bool = False) -> None:
    """Writes ``bundle``'s weights and biases to a device of ``profile`` that comes out of configuration
    without W₀ (:attr:`~poise.boards.profiles.BoardProfile.boot_loaded`), unless ``keep``."""
    if not profile.boot_loaded or keep:
        return
    from tqdm import tqdm

    from poise.golden.integer import IntegerSpikingModel

    model = IntegerSpikingModel.from_bundle(bundle)
    total = sum(array.size for array in [*model.weights, *model.biases])
    what = f"loading {bundle.spec.arch} (the {profile.name} starts without W₀)"
    with tqdm(total=total, unit="value", desc=what) as bar:
        device.load_parameters(model.weights, model.biases, bar.update)


@contextlib.contextmanager
def open_device(args: argparse.Namespace) -> Iterator[tuple[Any, Any, str]]:
    """The connected device (INFO asked, its network checked against the bundle), the bundle it runs and a
    description, for the chosen transport."""
    from poise.boards.profiles import board_profile
    from poise.firmware.driver import PoiseDevice
    from poise.firmware.link import Link, LoopbackTransport, SerialTransport
    from poise.golden.bundle import load_bundle

    with contextlib.ExitStack() as stack:
        if args.twin:
            from poise.sim.board_twin import board_twin

            built = board_twin(args.twin, args.bundle)
            twin = stack.enter_context(built.start())
            bundle, transport, where = built.bundle, SerialTransport(twin.port), f"the {args.twin} twin on {twin.port}"
            profile = built.profile
        else:
            profile = board_profile(args.board)
            bundle = load_bundle(args.bundle or profile.default_bundle())
            if args.reference:
                from poise.firmware.reference import ReferenceDevice

                soc = profile.soc
                reference = ReferenceDevice(bundle, soc.lanes, soc.clock_hz, soc.baud, soc.max_body)
                transport, where = LoopbackTransport(reference, name="the reference device"), "the reference device"
            else:
                transport, where = SerialTransport(args.port, args.baud or profile.soc.baud), args.port
        link = stack.enter_context(Link(transport, timeout=args.timeout))
        device = PoiseDevice(link)
        device.connect()
        device.check_bundle(bundle)
        if not args.reference:
            load_boot_weights(device, bundle, profile, args.keep_weights)
        yield device, bundle, where


def run(args: argparse.Namespace) -> int:
    summary = stream_from_args(args)
    return 0 if not summary.mismatches and summary.interrupted is None else 1


def stream_from_args(args: argparse.Namespace) -> Any:
    from tqdm import tqdm

    from poise.firmware.messages import Encoding
    from poise.firmware.stream import require_images, stream
    from poise.golden.data import load_dataset

    if args.lr_shift is not None and not args.train:
        raise PoiseError("--lr-shift only applies to --train")
    dataset = load_dataset(args.dataset)
    split = args.split or ("train" if args.train else "test")
    images = getattr(dataset, f"{split}_images")[:args.limit]
    labels = getattr(dataset, f"{split}_labels")[:args.limit]
    encoding = Encoding[args.encoding.upper()]
    with open_device(args) as (device, bundle, where):
        require_images(images, device.info.sizes[0])
        verb = "training on" if args.train else "inferring"
        print(f"poise stream: {verb} {len(images)} {args.dataset} {split} images through {where} "
              f"({'-'.join(map(str, device.info.sizes))}, {encoding.name.lower()} encoding)")
        with tqdm(total=len(images), unit="img", desc=verb) as bar:
            summary = stream(device, bundle, images, labels, args.out, train=args.train, encoding=encoding,
                             check=args.check, lr_shift=args.lr_shift, progress=bar)
    report(summary, args.out)
    return summary


def report(summary: Any, out: Path) -> None:
    print(f"{summary.images} images: accuracy {100 * summary.accuracy:.2f}%, {summary.images_per_second:.1f} "
          f"images/s, per image {summary.mean_spikes:.0f} spikes, {summary.mean_synops:.0f} SynOps, "
          f"{summary.mean_cycles:.0f} cycles; {summary.request_bytes:.0f} bytes per request")
    if summary.checked:
        if summary.mismatches:
            print("MISMATCH with the integer golden model:")
            for line in summary.mismatches:
                print(f"  {line}")
        else:
            what = "every result and every weight" if summary.weights_equal else "every result"
            print(f"bit-exact: {what} equal to the integer golden model's")
    if summary.interrupted:
        print(f"stopped early, {summary.images} results kept: {summary.interrupted}")
    print(f"results in {out / 'results.jsonl'}, summary in {out / 'summary.json'}, confusion matrix in "
          f"{out / 'confusion.png'}" + (f", learning curve in {out / 'learning.png'}" if summary.mode == "train"
                                        else ""))
