"""``poise demo``: the main job. For now a short training run on real MNIST that prints test accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="short EqProp training demo on real MNIST")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.golden.data import load_dataset
    from poise.golden.spec import default_spec
    from poise.golden.train import train

    dataset = load_dataset("mnist")
    spec = default_spec("continuous")
    print(f"poise demo: continuous EqProp {spec.arch} on the full MNIST training set (60000 images), "
          f"{args.epochs} epoch(s), then the 10000 test images")
    bundle = train(spec, dataset, args.epochs, args.out, resume=False)
    last = bundle.info["history"][-1]
    print(f"test accuracy {100 * (1 - last['test_error']):.2f}% after {args.epochs} epoch(s) "
          f"({last['seconds']:.1f} s of training); bundle in {args.out / 'model.npz'}")
    return 0
