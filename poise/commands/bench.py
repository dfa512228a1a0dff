"""``poise bench``: slow, measured work that stays out of the test suite."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (slow); results go to BENCHMARKS.md")
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    from poise.boards import bench as bench_boards
    from poise.golden import bench, bench_integer
    from poise.sim import bench_core, bench_stream

    bench.register(sub)
    bench_integer.register(sub)
    bench_core.register(sub)
    bench_stream.register(sub)
    bench_boards.register(sub)
