"""``poise flash``: write a bitstream to a board with its own programmer."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

DEFAULT_BUILD = Path("build")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("flash", help="flash a bitstream to a board (iceprog, openFPGALoader, dfu-util)")
    parser.add_argument("--board", required=True, help="icebreaker, orangecrab or ulx3s")
    parser.add_argument("--bitstream", type=Path, help="default: the one poise build wrote (build/BOARD/top.*)")
    parser.add_argument("--dry-run", action="store_true", help="print the exact command, run nothing")
    parser.set_defaults(func=run)


def default_bitstream(board: str) -> Path:
    folder = DEFAULT_BUILD / board
    found = [path for path in (folder / "top.bit", folder / "top.bin") if path.is_file()]
    return found[0] if found else folder / ("top.bin" if board == "icebreaker" else "top.bit")


def run(args: argparse.Namespace) -> int:
    from poise.boards.flash import flash, flash_command, programmer

    bitstream = args.bitstream or default_bitstream(args.board)
    if args.dry_run:
        print(shlex.join(flash_command(args.board, bitstream)))
        return 0
    output = flash(args.board, bitstream)
    print(output)
    print(f"flashed {bitstream} to the {args.board}; {programmer(args.board).verifies}")
    return 0
