"""``poise build``: a board's bitstream of a network, with the resource and timing report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from poise.commands.flash import DEFAULT_BUILD


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("build", help="synthesis, place and route and packing for a board")
    parser.add_argument("--board", required=True, help="icebreaker, orangecrab or ulx3s")
    parser.add_argument("--bundle", type=Path, help="fixed-point bundle (default: the board's embedded one)")
    parser.add_argument("--out", type=Path, help="build folder (default: build/BOARD)")
    parser.add_argument("--lanes", type=int, help="synapse lanes (default: the board profile's)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.boards.build import build

    out = args.out or DEFAULT_BUILD / args.board
    report = build(args.board, args.bundle, out, lanes=args.lanes)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    print(f"bitstream {report.bitstream or '(none)'}; report {out / 'build.json'}; {report.seconds:.0f} s")
    if not report.timing_met:
        print(f"poise: error: timing not met on the {args.board}: Fmax {report.fmax_mhz or 0:.1f} MHz against "
              f"{report.target_mhz:g} MHz")
        return 1
    return 0
