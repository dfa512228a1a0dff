"""``poise bench stream``: images per second through the twin for each image encoding, beside what a board
would do: the minimum of its compute bound (clock / cycles per image) and its UART bound (line rate / bytes
per image, the larger direction), both from the same run.

Per encoding the twin streams ``--images`` MNIST test images (two requests in flight, every result checked
against the integer golden model) and reports its images/s, the mean request and reply frame sizes on the
wire, and the device's cycles per image. The projection uses each board profile's clock and baud rate
(the post-route Fmax replaces the clock once the board builds report it). Results go to ``OUT/stream.json``,
``OUT/stream.md`` and ``OUT/stream_rates.png``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

import numpy as np

from poise.commands.train import positive_int

UART_BITS_PER_BYTE = 10  # start, 8 data bits, stop


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stream", help="twin images/s per encoding, projected board images/s")
    parser.add_argument("--board", default="icebreaker", help="the twin's board")
    parser.add_argument("--bundle", type=Path, help="the network (default: the board's embedded one)")
    parser.add_argument("--images", type=positive_int, default=1000, help="MNIST test images per encoding")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(func=run)


def frame_sizes(images: np.ndarray, classes: int, encoding: Any) -> tuple[float, int]:
    """Bytes on the wire of an INFER request (the mean over ``images``, in ``encoding``) and of its reply."""
    from poise.firmware.driver import PoiseDevice
    from poise.firmware.framing import pack_frame
    from poise.firmware.messages import RESULT_HEAD
    from poise.firmware.protocol import REPLY, Opcode, encode_packet

    def request_bytes(image: np.ndarray) -> int:
        return len(pack_frame(encode_packet(0, Opcode.INFER, PoiseDevice.infer_payload(image, encoding))))

    request = float(np.mean([request_bytes(image) for image in images]))
    reply = len(pack_frame(encode_packet(0, Opcode.INFER | REPLY, bytes(RESULT_HEAD.size + 2 * classes))))
    return request, reply


def uart_bound(baud: int, request_bytes: float, reply_bytes: float) -> float:
    """Images/s the line carries: requests and replies travel at the same time, the larger one bounds."""
    return baud / UART_BITS_PER_BYTE / max(request_bytes, reply_bytes)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from poise.boards.profiles import PROFILES
    from poise.firmware.driver import PoiseDevice
    from poise.firmware.link import Link, SerialTransport
    from poise.firmware.messages import Encoding
    from poise.firmware.stream import stream
    from poise.golden.bench import publish
    from poise.golden.data import load_dataset
    from poise.sim.board_twin import board_twin

    dataset = load_dataset("mnist")
    images, labels = dataset.test_images[:args.images], dataset.test_labels[:args.images]
    built = board_twin(args.board, args.bundle)
    rows: list[dict[str, Any]] = []
    for encoding in (Encoding.RAW, Encoding.PACKED):
        with built.start() as twin:
            link = Link(SerialTransport(twin.port), timeout=10)
            device = PoiseDevice(link)
            device.connect()
            with tqdm(total=len(images), unit="img", desc=encoding.name.lower()) as bar:
                summary = stream(device, built.bundle, images, labels, args.out / f"stream-{encoding.name.lower()}",
                                 encoding=encoding, check=True, progress=bar)
            link.close()
        if summary.mismatches:
            print("\n".join(summary.mismatches), file=sys.stderr)
            return 1
        request, reply = frame_sizes(images, device.classes, encoding)
        rows.append({"encoding": encoding.name.lower(), "twin_images_per_second": summary.images_per_second,
                     "request_frame_bytes": request, "reply_frame_bytes": reply,
                     "cycles_per_image": summary.mean_cycles, "accuracy": summary.accuracy})
    boards = []
    for name, profile in PROFILES.items():
        for row in rows:
            compute = profile.soc.clock_hz / row["cycles_per_image"]
            line = uart_bound(profile.soc.baud, row["request_frame_bytes"], row["reply_frame_bytes"])
            boards.append({"board": name, "encoding": row["encoding"], "clock_hz": profile.soc.clock_hz,
                           "baud": profile.soc.baud, "compute_bound": compute, "uart_bound": line,
                           "projected_images_per_second": min(compute, line)})
    result = {"date": datetime.date.today().isoformat(), "command": " ".join(["poise", *sys.argv[1:]]),
              "board": args.board, "bundle": str(built.bundle_path.name), "images": len(images), "twin": rows,
              "projected": boards}
    publish(args.out, "stream", result, markdown(result), plot, "stream_rates.png")
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = ["| encoding | request frame (bytes) | twin images/s | cycles/image |", "|---|---|---|---|"]
    lines += [f"| {r['encoding']} | {r['request_frame_bytes']:.0f} | {r['twin_images_per_second']:.1f} | "
              f"{r['cycles_per_image']:.0f} |" for r in result["twin"]]
    lines += ["", "| board | encoding | clock | baud | compute bound | UART bound | projected images/s |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {b['board']} | {b['encoding']} | {b['clock_hz'] / 1e6:g} MHz | {b['baud'] / 1e6:g} M | "
              f"{b['compute_bound']:.0f} | {b['uart_bound']:.0f} | {b['projected_images_per_second']:.0f} |"
              for b in result["projected"]]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    boards = sorted({b["board"] for b in result["projected"]})
    encodings = [r["encoding"] for r in result["twin"]]
    figure, axes = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / (2 * len(encodings))
    for k, encoding in enumerate(encodings):
        chosen = {b["board"]: b for b in result["projected"] if b["encoding"] == encoding}
        x = np.arange(len(boards)) + (2 * k) * width
        axes.bar(x, [chosen[b]["compute_bound"] for b in boards], width, label=f"compute bound ({encoding})",
                 alpha=0.4)
        axes.bar(x + width, [chosen[b]["uart_bound"] for b in boards], width, label=f"UART bound ({encoding})")
    axes.set_xticks(np.arange(len(boards)) + width * (len(encodings) - 0.5), boards)
    axes.set_ylabel("images/s")
    axes.set_title("projected board throughput: min(compute, UART)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
