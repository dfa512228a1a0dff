"""``poise twin``: start a board's simulated twin and leave it running for any serial client."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("twin", help="start a board's simulated twin behind a pseudo-terminal")
    parser.add_argument("--board", default="icebreaker", help="icebreaker, orangecrab or ulx3s")
    parser.add_argument("--bundle", type=Path, help="the network it carries (default: the board's embedded one)")
    parser.add_argument("--link", type=Path, help="also make this path a symlink to the port")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.sim.board_twin import board_twin

    built = board_twin(args.board, args.bundle)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    with built.start(args.link) as twin:
        print(f"the {args.board} twin runs {built.bundle.spec.arch} from {built.bundle_path.name} on {twin.port} "
              "(any baud rate works on the pty)", flush=True)
        print(f"stream to it with: poise stream --port {twin.port} --board {args.board}; Ctrl-C stops it",
              flush=True)
        while not stop.wait(0.5):
            if not twin.running:
                print(f"the twin stopped: {twin.stderr_text()[-500:]}")
                return 1
    return 0
