"""The ``poise`` command line: thin glue over the library.

Each subcommand lives in ``poise.commands.<name>`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning an exit status.
"""

import argparse
import importlib
import sys

from poise import __version__
from poise.errors import PoiseError

COMMANDS = ("data", "train", "eval", "quantize", "verilog", "bench", "stream", "twin", "build", "flash", "selftest",
            "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poise",
        description="Spiking EqProp networks: golden models, RTL, boards and streaming.",
    )
    parser.add_argument("--version", action="version", version=f"poise {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"poise.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PoiseError as error:
        print(f"poise: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("poise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
