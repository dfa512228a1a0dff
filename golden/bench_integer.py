"""``poise bench integer``: the integer golden model against the float model it stands for.

Experiments (select with ``--only``):
- ``inference``: every ``--bundle`` (a float spiking bundle from ``poise train``) is quantised with
  ``derive_fixed_spec`` (``--weight-bits``, default 8) and run on the MNIST test set by the float and the
  integer model, in both input modes (the bundle's weights also run with the other ``input_mode``, with a
  fixed-point spec derived for that mode). Float and integer accuracy, their difference and the fraction
  of images on which both pick the same class; target: |difference| ≤ 0.3 points.
- ``training``: on-chip training from scratch. A fresh Glorot network (``--arch``, default 784-128-10;
  current input; the spec ``poise train --model spiking --arch ARCH --input-mode current --lr-decay 0.85``
  trains with) learns the first ``--train-images`` MNIST training images in order, batch 1, once with the
  integer model (``IntegerSpikingModel.train``: spike-triggered read-modify-writes, LFSR stochastic
  rounding, fixed-point spec ``derive_fixed_spec(..., learning=True)``) and once with the float
  spike-triggered rule, both with the spec's learning rates per image (times ``--lr-scale``). Both are
  scored on the test set at ``--checkpoints`` evenly spaced points; target: the integer model ends within
  1 point of the float rule.

This command trains no bundles. The 784-128-10 bundle of BENCHMARKS.md comes from
``poise train --model spiking --arch 784-128-10 --input-mode current --epochs 30 --lr-decay 0.85 --out DIR``.

Results go to ``OUT/integer.json`` (one entry per bundle and one for training, each with the date and
command), ``OUT/integer.md`` (the tables) and ``OUT/integer_training.png`` (learning curves).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from poise.commands.quantize import CHUNK, compare_accuracy, formats
from poise.commands.train import positive_int
from poise.golden.bench import chosen_experiments, save_figure
from poise.golden.spec import NetworkSpec, SpikingOptions, default_spec, parse_arch

EXPERIMENTS = ("inference", "training")
INPUT_MODES = ("current", "spike")
INFERENCE_TOLERANCE = 0.003  # |integer − float| test accuracy, as a fraction (+1e-12: k/10000 is inexact)
TRAINING_TOLERANCE = 0.01
TRAINING_ARCH = (784, 128, 10)
TRAINING_IMAGES = 50000
PLOT = "integer_training.png"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("integer", help="the integer model against the float model: inference and "
                                   "on-chip training")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--bundle", type=Path, action="append", default=[],
                        help="a float spiking bundle for the inference comparison (repeatable)")
    parser.add_argument("--weight-bits", type=positive_int, default=8, help="weight width (default 8)")
    parser.add_argument("--arch", type=parse_arch, default=TRAINING_ARCH,
                        help="network trained from scratch (default 784-128-10)")
    parser.add_argument("--train-images", type=positive_int, default=TRAINING_IMAGES,
                        help=f"training images for on-chip training (default {TRAINING_IMAGES})")
    parser.add_argument("--lr-scale", type=float, default=1.0,
                        help="multiply the spec's learning rates for on-chip training (batch 1 applies the full "
                        "rate per image; 0.05 moves the weights per image as batch 20 does)")
    parser.add_argument("--checkpoints", type=positive_int, default=10,
                        help="test-set evaluations during training, evenly spaced (default 10)")
    parser.add_argument("--test-limit", type=positive_int, help="score on the first N test images only")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.errors import PoiseError
    from poise.golden.data import load_dataset

    chosen = chosen_experiments(args.only, EXPERIMENTS)
    if "inference" in chosen and not args.bundle:
        raise PoiseError("the inference experiment needs --bundle PATH (a float spiking bundle from poise train); "
                         "or run --only training")
    if "training" in chosen and args.train_images < args.checkpoints:
        raise PoiseError(f"--train-images {args.train_images} is fewer than --checkpoints {args.checkpoints}")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "integer.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    mnist = load_dataset("mnist")
    images, labels = mnist.test_images[:args.test_limit], mnist.test_labels[:args.test_limit]
    progress = not args.no_progress
    stamp = {"date": datetime.date.today().isoformat()}
    if "inference" in chosen:
        for path in args.bundle:
            print(f"== inference: {path}")
            entry = {**inference(path, images, labels, args.weight_bits, progress), **stamp,
                     "command": command_line(args, "inference", path)}
            results.setdefault("inference", {})[str(path)] = entry
            results_path.write_text(json.dumps(results, indent=1, sort_keys=True))
            print(f"pass: {entry['pass']}")
    if "training" in chosen:
        print(f"== training: {'-'.join(map(str, args.arch))}, {args.train_images} images")
        entry = {**training(args.arch, mnist, images, labels, args.train_images, args.checkpoints,
                            args.weight_bits, args.out, progress, args.lr_scale), **stamp,
                 "command": command_line(args, "training")}
        results["training"] = entry
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True))
        print(f"integer {100 * entry['integer_final']:.2f}%, float {100 * entry['float_final']:.2f}% "
              f"({entry['difference_points']:+.2f} points); pass: {entry['pass']}")
    (args.out / "integer.md").write_text(report(results))
    print(f"wrote {results_path} and {args.out / 'integer.md'}")
    return 0


def command_line(args: argparse.Namespace, name: str, bundle: Path | None = None) -> str:
    """The command that reproduces experiment ``name`` (for one bundle) with the options of this run."""
    words = ["poise bench integer --only", name]
    if bundle is not None:
        words.append(f"--bundle {bundle}")
    if args.weight_bits != 8:
        words.append(f"--weight-bits {args.weight_bits}")
    if name == "training":
        if tuple(args.arch) != TRAINING_ARCH:
            words.append("--arch " + "-".join(map(str, args.arch)))
        words.append(f"--train-images {args.train_images}")
        if args.lr_scale != 1:
            words.append(f"--lr-scale {args.lr_scale:g}")
        if args.checkpoints != 10:
            words.append(f"--checkpoints {args.checkpoints}")
    if args.test_limit:
        words.append(f"--test-limit {args.test_limit}")
    return " ".join(words)


# -- inference ----------------------------------------------------------------------------------------
def with_input_mode(spec: NetworkSpec, mode: str) -> NetworkSpec:
    return spec.replace(spiking=SpikingOptions(**{**spec.spiking.__dict__, "input_mode": mode}))


def inference(path: Path, images: np.ndarray, labels: np.ndarray, weight_bits: int, progress: bool
              ) -> dict[str, Any]:
    """Float against integer accuracy of one bundle's weights in both input modes."""
    from poise.errors import PoiseError
    from poise.golden.bundle import Bundle, load_bundle
    from poise.golden.fixed import derive_fixed_spec

    bundle = load_bundle(path)
    if bundle.spec.model != "spiking":
        raise PoiseError(f"{path}: a {bundle.spec.model} bundle; the integer model runs spiking networks only")
    history = bundle.info.get("history", [])
    entry: dict[str, Any] = {"arch": bundle.spec.arch, "trained_input_mode": bundle.spec.spiking.input_mode,
                             "epochs": len(history), "weight_bits": weight_bits, "modes": {}}
    for mode in INPUT_MODES:
        spec = with_input_mode(bundle.spec, mode)
        fixed = derive_fixed_spec(spec, bundle.params, weight_bits=weight_bits)
        start = time.perf_counter()
        accuracy = compare_accuracy(Bundle(spec, bundle.params, bundle.info), fixed, images, labels, progress)
        difference = accuracy["integer_accuracy"] - accuracy["float_accuracy"]
        entry["modes"][mode] = {
            **{key: value for key, value in accuracy.items() if key != "cost_points"},  # a fraction, not points
            "difference_points": 100 * difference, "pass": bool(abs(difference) <= INFERENCE_TOLERANCE + 1e-12),
            "seconds": time.perf_counter() - start,
            "formats": {name: [fmt.width, fmt.frac] for name, fmt in formats(fixed).items()},
        }
        print(f"{mode}: float {100 * accuracy['float_accuracy']:.2f}%, integer "
              f"{100 * accuracy['integer_accuracy']:.2f}% ({100 * difference:+.2f} points), same class for "
              f"{100 * accuracy['agreement']:.2f}% of images")
    entry["pass"] = all(row["pass"] for row in entry["modes"].values())
    return entry


# -- on-chip training ---------------------------------------------------------------------------------
def training_spec(arch: tuple[int, ...]) -> NetworkSpec:
    """The spec ``poise train --model spiking --arch ARCH --input-mode current --lr-decay 0.85`` trains with
    (the decay never acts here: fewer than one epoch is trained)."""
    spec = default_spec("spiking", tuple(arch))
    return spec.replace(learning_rate_decay=0.85, spiking=SpikingOptions(**{**spec.spiking.__dict__,
                                                                           "input_mode": "current"}))


def training(arch: tuple[int, ...], mnist: Any, images: np.ndarray, labels: np.ndarray, train_images: int,
             checkpoints: int, weight_bits: int, out: Path, progress: bool, lr_scale: float = 1.0
             ) -> dict[str, Any]:
    """Train the integer model and the float spike-triggered rule from the same fresh weights, batch 1, on the
    same images in the same order; test accuracy of both at evenly spaced checkpoints."""
    from poise.errors import PoiseError
    from poise.golden.fixed import derive_fixed_spec
    from poise.golden.integer import IntegerSpikingModel
    from poise.golden.model import build_model
    from poise.golden.train import as_input, epoch_rng, evaluate

    if lr_scale <= 0:
        raise PoiseError(f"--lr-scale {lr_scale} must be positive")
    if train_images > len(mnist.train_images):
        raise PoiseError(f"--train-images {train_images}: MNIST has {len(mnist.train_images)} training images")
    base = training_spec(arch)
    spec = base.replace(batch_size=1, learning_rates=tuple(lr_scale * rate for rate in base.learning_rates),
                        spiking=SpikingOptions(**{**base.spiking.__dict__, "rule": "spike_triggered"}))
    params = build_model(spec).params  # Glorot weights, zero biases, seeded by spec.seed
    fixed = derive_fixed_spec(spec, params, weight_bits=weight_bits, learning=True)
    integer = IntegerSpikingModel.from_float(spec, params, fixed)
    floating = build_model(spec, {name: value.copy() for name, value in params.items()})
    rng = epoch_rng(spec, 1)  # the float rule's β signs
    x, y = mnist.train_images[:train_images], mnist.train_labels[:train_images].astype(np.int64)
    signs = 1 - 2 * (np.arange(train_images) % 2)  # the integer model's β signs: +, −, +, … (random_beta_sign)

    def integer_accuracy() -> float:
        predictions = np.concatenate([integer.infer(images[first:first + CHUNK]).predictions
                                      for first in range(0, len(images), CHUNK)])
        return float((predictions == labels).mean())

    def float_accuracy() -> float:
        return evaluate(floating, images, labels, batch=CHUNK, rng=epoch_rng(spec, 1, 1)).accuracy

    marks = np.linspace(0, train_images, checkpoints + 1).round().astype(int)
    curves: dict[str, list[float]] = {"integer": [integer_accuracy()], "float": [float_accuracy()]}
    seconds = {"integer": 0.0, "float": 0.0}
    wrong = {"integer": 0, "float": 0}
    step = 50  # images per progress update
    bar = tqdm(total=2 * train_images, desc="integer and float, batch 1", unit="img", disable=not progress)
    for first, last in itertools.pairwise(marks.tolist()):
        for start in range(first, last, step):
            stop = min(start + step, last)
            clock = time.perf_counter()
            predicted = integer.train(x[start:stop], y[start:stop], signs[start:stop])
            seconds["integer"] += time.perf_counter() - clock
            wrong["integer"] += int((predicted != y[start:stop]).sum())
            clock = time.perf_counter()
            for i in range(start, stop):
                result = floating.train_batch(as_input(x[i:i + 1]), y[i:i + 1], rng)
                wrong["float"] += int(result.predictions[0] != y[i])
            seconds["float"] += time.perf_counter() - clock
            bar.update(2 * (stop - start))
        curves["integer"].append(integer_accuracy())
        curves["float"].append(float_accuracy())
        bar.set_postfix(integer=f"{curves['integer'][-1]:.3f}", float=f"{curves['float'][-1]:.3f}", refresh=False)
        tqdm.write(f"{last} images: test accuracy integer {100 * curves['integer'][-1]:.2f}%, "
                   f"float {100 * curves['float'][-1]:.2f}%")
    bar.close()
    plot_training(out / PLOT, marks.tolist(), curves, spec.arch, weight_bits)
    difference = curves["integer"][-1] - curves["float"][-1]
    return {
        "arch": spec.arch, "train_images": train_images, "test_images": len(images), "weight_bits": weight_bits,
        "weight_format": [fixed.weight.width, fixed.weight.frac], "images_trained": marks.tolist(),
        "integer_accuracy": curves["integer"], "float_accuracy": curves["float"],
        "integer_final": curves["integer"][-1], "float_final": curves["float"][-1],
        "difference_points": 100 * difference, "pass": bool(abs(difference) <= TRAINING_TOLERANCE + 1e-12),
        "integer_running_train_error": wrong["integer"] / train_images,
        "float_running_train_error": wrong["float"] / train_images,
        "integer_images_per_second": train_images / seconds["integer"],
        "float_images_per_second": train_images / seconds["float"],
        "integer_clamped": integer.learn_saturations["saturations"], "float_batch_size": 1,
        "plot": str(out / PLOT), "spec": spec.to_dict(),
    }


def plot_training(path: Path, images: list[int], curves: dict[str, list[float]], arch: str, weight_bits: int
                  ) -> None:
    """Test accuracy against training images of the integer model and the float rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"integer": f"integer model ({weight_bits}-bit weights, stochastic rounding)",
              "float": "float spike-triggered rule"}
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, values in curves.items():
        axes.plot(images, [100 * value for value in values], marker=".", label=labels.get(name, name))
    axes.set_xlabel("training images (batch 1, one pass)")
    axes.set_ylabel("MNIST test accuracy (%)")
    axes.set_title(f"On-chip training from scratch, {arch}, current input")
    save_figure(figure, axes, path, legend_size=8)


# -- report -------------------------------------------------------------------------------------------
def report(results: dict[str, Any]) -> str:
    """Markdown tables of the recorded experiments, for BENCHMARKS.md."""
    lines = []
    if results.get("inference"):
        lines += ["| bundle | arch | trained with | input | float acc. | integer acc. | difference | agree | pass | "
                  "date |", "|---|---|---|---|---|---|---|---|---|---|"]
        for path, entry in results["inference"].items():
            for mode, row in entry["modes"].items():
                lines.append(
                    f"| {Path(path).parent.name} | {entry['arch']} | {entry['trained_input_mode']} | {mode} | "
                    f"{100 * row['float_accuracy']:.2f} % | {100 * row['integer_accuracy']:.2f} % | "
                    f"{row['difference_points']:+.2f} | {100 * row['agreement']:.2f} % | {row['pass']} | "
                    f"{entry['date']} |")
        lines.append("")
    if "training" in results:
        r = results["training"]
        lines += ["| images trained | " + " | ".join(f"{n:,}" for n in r["images_trained"]) + " |",
                  "|---" * (len(r["images_trained"]) + 1) + "|"]
        for name in ("integer", "float"):
            lines.append(f"| {name} | " + " | ".join(f"{100 * v:.2f} %" for v in r[f"{name}_accuracy"]) + " |")
        rates = ", ".join(f"{rate:g}" for rate in r["spec"]["learning_rates"])
        lines += ["", f"{r['arch']}, batch 1, learning rates ({rates}), {r['train_images']:,} training images, "
                  f"{r['test_images']:,} test images: integer {100 * r['integer_final']:.2f} %, float "
                  f"{100 * r['float_final']:.2f} % "
                  f"({r['difference_points']:+.2f} points; target within ±{100 * TRAINING_TOLERANCE:g}); "
                  f"pass: {r['pass']}. Training speed: integer {r['integer_images_per_second']:.1f} images/s, "
                  f"float {r['float_images_per_second']:.1f} images/s ({r['date']}).", ""]
    return "\n".join(lines)
