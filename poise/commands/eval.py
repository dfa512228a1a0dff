"""``poise eval``: accuracy, confusion matrix and spike cost of a bundle on a dataset's test set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from poise.commands.train import positive_int
from poise.errors import PoiseError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model bundle on a test set")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--dataset", default=None, help="default: the dataset the bundle was trained on")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N test images only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.golden.bundle import load_bundle
    from poise.golden.data import load_dataset
    from poise.golden.model import build_model
    from poise.golden.train import evaluate

    bundle = load_bundle(args.bundle)
    dataset = load_dataset(args.dataset or bundle.info.get("dataset", "mnist"))
    model = build_model(bundle.spec, bundle.params)
    images, labels = dataset.test_images[: args.limit], dataset.test_labels[: args.limit]
    if images.shape[1] != bundle.spec.layers[0]:
        raise PoiseError(
            f"dataset {dataset.name} has {images.shape[1]} pixels per image but the bundle's network "
            f"{bundle.spec.arch} takes {bundle.spec.layers[0]} inputs"
        )
    result = evaluate(model, images, labels, rng=np.random.default_rng(bundle.spec.seed),
                      progress=not (args.no_progress or args.json))
    summary = {"bundle": str(args.bundle), "model": bundle.spec.model, "arch": bundle.spec.arch,
               "dataset": dataset.name, **result.to_dict()}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{bundle.spec.model} {bundle.spec.arch} on {dataset.name} ({result.images} test images): "
              f"accuracy {100 * result.accuracy:.2f}%, error {100 * result.error:.2f}%")
        if result.spikes_per_image:
            print(f"spikes/image {result.spikes_per_image:.0f}, SynOps/image {result.synops_per_image:.0f}")
        print("confusion matrix (rows: true class, columns: predicted):")
        print(result.confusion)
    return 0
