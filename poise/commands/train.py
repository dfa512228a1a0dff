"""``poise train``: train a golden model on a dataset and write a run directory with a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from poise.errors import PoiseError
from poise.golden.data import load_dataset
from poise.golden.spec import MODEL_KINDS, NetworkSpec, Schedule, default_spec, parse_arch


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a golden EqProp model",
        description="Train a golden model. Unset options take the model's paper-faithful defaults "
        "(docs/ALGORITHM_CHOICES.md).",
    )
    parser.add_argument("--model", choices=MODEL_KINDS, default="continuous")
    parser.add_argument("--arch", default="784-500-10", help="layer sizes, input first (default 784-500-10)")
    parser.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist or an imported IDX dataset")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="run directory (default runs/MODEL-ARCH-DATASET)")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    add_spec_options(parser)
    parser.add_argument("--train-limit", type=positive_int, help="train on the first N images only")
    parser.add_argument("--test-limit", type=positive_int, help="test on the first N images only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    """Options that override fields of the model's default spec."""
    group = parser.add_argument_group("network spec (defaults depend on --model)")
    group.add_argument("--steps", help="free and nudged phase lengths, e.g. 100,50")
    group.add_argument("--epsilon", help="ε schedule: 0.5, 0.843/t^0.0923 or osa:0.0346")
    group.add_argument("--beta", type=float)
    group.add_argument("--fixed-beta-sign", action="store_true", help="do not draw a random sign of β per batch")
    group.add_argument("--lr", help="per-layer learning rates, comma separated")
    group.add_argument("--lr-decay", type=float, help="multiply the learning rates by this after every epoch")
    group.add_argument("--batch-size", type=int)
    group.add_argument("--seed", type=int)
    spiking = parser.add_argument_group("spiking model")
    spiking.add_argument("--encoder", choices=("sigma_delta", "stochastic"))
    spiking.add_argument("--lambda", dest="lam", help="predictive-coding λ schedule, or 'off'")
    spiking.add_argument("--input-mode", choices=("spike", "current"))
    spiking.add_argument("--rule", choices=("contrastive", "spike_triggered"))
    spiking.add_argument("--restart-time", action="store_true", help="restart t at 1 for the nudged phase")


def spec_from_args(args: argparse.Namespace) -> NetworkSpec:
    """The model's default spec with every given option applied."""
    spec = default_spec(args.model, parse_arch(args.arch))
    changes: dict = {}
    if args.steps:
        free, _, nudge = args.steps.partition(",")
        try:
            changes.update(steps_free=int(free), steps_nudge=int(nudge or spec.steps_nudge))
        except ValueError:
            raise PoiseError(f"cannot read --steps {args.steps!r}: write FREE,NUDGED like 100,50") from None
    if args.epsilon is not None:
        changes["epsilon"] = Schedule.parse(args.epsilon)
    if args.beta is not None:
        changes["beta"] = args.beta
    if args.fixed_beta_sign:
        changes["random_beta_sign"] = False
    if args.lr:
        try:
            changes["learning_rates"] = tuple(float(value) for value in args.lr.split(","))
        except ValueError:
            raise PoiseError(f"cannot read --lr {args.lr!r}: write one rate per weight layer, like 0.1,0.05") from None
    if args.lr_decay is not None:
        changes["learning_rate_decay"] = args.lr_decay
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.seed is not None:
        if args.seed < 0:
            raise PoiseError(f"--seed must be a non-negative integer, not {args.seed}")
        changes["seed"] = args.seed
    if spec.spiking is not None:
        options: dict = {}
        for name in ("encoder", "input_mode", "rule"):
            if getattr(args, name) is not None:
                options[name] = getattr(args, name)
        if args.lam is not None:
            options["predictive"] = None if args.lam == "off" else Schedule.parse(args.lam)
        if args.restart_time:
            options["continue_time"] = False
        changes["spiking"] = spec.spiking.__class__(**{**spec.spiking.__dict__, **options})
    return spec.replace(**changes)


def run(args: argparse.Namespace) -> int:
    from poise.golden.train import train

    spec = spec_from_args(args)
    dataset = load_dataset(args.dataset)
    out = args.out or Path("runs") / f"{spec.model}-{spec.arch}-{args.dataset}"
    print(f"training {spec.model} {spec.arch} on {dataset.name} for {args.epochs} epoch(s) -> {out}")
    train(spec, dataset, args.epochs, out, resume=args.resume, train_limit=args.train_limit,
          test_limit=args.test_limit, progress=not args.no_progress)
    print(f"wrote {out / 'model.npz'}, {out / 'metrics.jsonl'} and {out / 'learning_curve.png'}")
    return 0
