"""``poise quantize``: turn a float spiking bundle into a fixed-point one, check it fits a board, and report
what the fixed-point arithmetic costs in MNIST accuracy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from poise.commands.train import positive_int
from poise.errors import PoiseError

CHUNK = 500  # images per integer-model batch


def register(subparsers: argparse._SubParsersAction) -> None:
    from poise.boards.memory import BOARDS

    parser = subparsers.add_parser("quantize", help="make a fixed-point bundle for the integer model and the RTL")
    parser.add_argument("bundle", type=Path, help="a float spiking-model bundle (poise train --model spiking)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--board", choices=sorted(BOARDS), help="refuse unless the network fits this board")
    target.add_argument("--spec", type=Path, help="use this fixed-point spec (JSON) instead of deriving one")
    parser.add_argument("--weight-bits", type=positive_int, default=8, help="weight width when deriving (default 8)")
    parser.add_argument("--out", type=Path, help="default: BUNDLE with a -fixed suffix")
    parser.add_argument("--limit", type=positive_int, help="measure accuracy on the first N test images only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.boards.memory import check_fit, memory_needs
    from poise.golden.bundle import Bundle, load_bundle, save_bundle
    from poise.golden.data import load_dataset
    from poise.golden.fixed import FixedPointSpec, derive_fixed_spec

    bundle = load_bundle(args.bundle)
    spec = bundle.spec
    if args.spec is not None:
        fixed = read_fixed_spec(args.spec, FixedPointSpec)
    else:
        fixed = derive_fixed_spec(spec, bundle.params, weight_bits=args.weight_bits)
    needs = check_fit(args.board, spec.layers, fixed) if args.board else memory_needs(spec.layers, fixed)
    dataset = load_dataset(bundle.info.get("dataset", "mnist"))
    images, labels = dataset.test_images[: args.limit], dataset.test_labels[: args.limit]
    accuracy = compare_accuracy(bundle, fixed, images, labels, progress=not (args.no_progress or args.json))
    out = args.out or args.bundle.with_name(f"{args.bundle.stem}-fixed.npz")
    info = {**bundle.info, "quantized_from": str(args.bundle), "quantization": accuracy}
    checksum = save_bundle(out, Bundle(spec, bundle.params, info, fixed))
    summary = {"bundle": str(out), "checksum": checksum, "arch": spec.arch, "board": args.board,
               "memory_bits": {"parameters": needs.parameter_bits, "state": needs.state_bits, "roms": needs.rom_bits},
               "formats": {name: [fmt.width, fmt.frac] for name, fmt in formats(fixed).items()}, **accuracy}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{spec.arch} in fixed point: weights {fixed.weight.width} bit ({fixed.weight.frac} fraction bits), "
          f"state {fixed.state.width} bit; parameters {needs.parameter_bits / 8192:.1f} KiB, "
          f"neuron state {needs.state_bits / 8192:.1f} KiB" + (f", fits {args.board}" if args.board else ""))
    print(f"test accuracy on {accuracy['images']} images: float {100 * accuracy['float_accuracy']:.2f}%, "
          f"integer {100 * accuracy['integer_accuracy']:.2f}% ({100 * accuracy['cost_points']:+.2f} points; "
          f"same class for {100 * accuracy['agreement']:.2f}% of images)")
    print(f"wrote {out}")
    return 0


def read_fixed_spec(path: Path, kind: type) -> Any:
    try:
        return kind.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise PoiseError(f"{path}: no such fixed-point spec file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PoiseError(f"{path}: not a JSON fixed-point spec ({error})") from None
    except (PoiseError, KeyError, TypeError, ValueError) as error:
        raise PoiseError(f"{path}: not a valid fixed-point spec ({error})") from None


def formats(fixed: Any) -> dict[str, Any]:
    names = ("weight", "bias", "pixel", "state", "accumulator", "decoded", "pressure", "encoder", "increment")
    return {name: getattr(fixed, name) for name in names}


def compare_accuracy(bundle: Any, fixed: Any, images: np.ndarray, labels: np.ndarray, progress: bool
                     ) -> dict[str, Any]:
    """Test accuracy of the float model and of the integer model with the same weights, and how often they
    pick the same class."""
    from poise.golden.integer import IntegerSpikingModel
    from poise.golden.model import build_model
    from poise.golden.train import as_input

    floating = build_model(bundle.spec, bundle.params)
    integer = IntegerSpikingModel.from_float(bundle.spec, bundle.params, fixed)
    rng = np.random.default_rng(bundle.spec.seed)
    float_predictions, integer_predictions = [], []
    for first in tqdm(range(0, len(images), CHUNK), desc="float and integer models", unit="batch",
                      disable=not progress, leave=False):
        chunk = images[first:first + CHUNK]
        float_predictions.append(floating.infer(as_input(chunk), rng).predictions)
        integer_predictions.append(integer.infer(chunk).predictions)
    f, i = np.concatenate(float_predictions), np.concatenate(integer_predictions)
    float_accuracy, integer_accuracy = float((f == labels).mean()), float((i == labels).mean())
    return {"images": len(images), "float_accuracy": float_accuracy, "integer_accuracy": integer_accuracy,
            "cost_points": integer_accuracy - float_accuracy, "agreement": float((f == i).mean())}
