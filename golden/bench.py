"""``poise bench golden``: reproduce the papers' numbers with the golden models, and time them.

Experiments (select with ``--only``):
- ``convergence``: [000] Fig. 2 / [001] Fig. 8.2. A random 500-500-10 network with its input clamped to
  U(0,1) vectors (batch 20, Glorot weights); the reference fixed point s* comes from Eq. 3 (ε = 0.5, 10000
  steps); error(t) = mean |s* − sᵗ| over the non-input neurons (authors' metric).
- ``speed``: seconds per 60k-image epoch of every model, beside the GEMM bound measured in the same run.
- ``continuous``, ``spiking``, ``spiking-current``, ``spike-triggered``, ``eqspike``, ``asymmetric``:
  full training runs on MNIST; the figure of merit is the mean test error of the last 3 epochs.

Results go to ``OUT/golden.json`` (one entry per experiment, with the date and command) plus PNGs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from poise.golden.continuous import ContinuousEqProp
from poise.golden.equations import glorot_uniform
from poise.golden.model import build_model
from poise.golden.spec import NetworkSpec, Schedule, SpikingOptions, default_spec, parse_arch
from poise.golden.spiking import Phase, SpikingEqProp

#: Each run is ``default_spec(model, arch)`` with ``spec`` fields and ``spiking`` options replaced. A run
#: with ``compare`` passes when its error is within ``tolerance`` of that run's (same network, other rule).
#: With constant rates the spiking runs' test error swings by ±0.3 points from epoch to epoch; the ``-decay``
#: runs anneal the rates by 0.85 per epoch, which settles it.
TRAINING_RUNS: dict[str, dict[str, Any]] = {
    "continuous": {"model": "continuous", "arch": (784, 500, 10), "epochs": 25, "target": 0.0257},
    "spiking": {"model": "spiking", "arch": (784, 500, 10), "epochs": 25, "target": 0.0234},
    "spiking-decay": {"model": "spiking", "arch": (784, 500, 10), "epochs": 15, "target": 0.0234,
                      "spec": {"learning_rate_decay": 0.85}},
    "spiking-current": {"model": "spiking", "arch": (784, 500, 10), "epochs": 25, "target": 0.0234,
                        "spiking": {"input_mode": "current"}},
    "spiking-current-decay": {"model": "spiking", "arch": (784, 500, 10), "epochs": 15, "target": 0.0234,
                              "spiking": {"input_mode": "current"}, "spec": {"learning_rate_decay": 0.85}},
    "spike-triggered": {"model": "spiking", "arch": (784, 500, 10), "epochs": 25, "target": None,
                        "spiking": {"rule": "spike_triggered"}, "compare": "spiking", "tolerance": 0.005},
    # Batch 20 instead of [002]'s 1: l_r is per image and updates are summed, so an epoch moves the weights
    # as far; it runs 5x faster (docs/EQSPIKE.md).
    "eqspike": {"model": "eqspike", "arch": (784, 300, 10), "epochs": 50, "target": 1 - 0.9759,
                "spec": {"batch_size": 20}},
    "asymmetric": {"model": "asymmetric", "arch": (784, 512, 512, 512, 10), "epochs": 70, "target": 0.02},
}
EXPERIMENTS = ("convergence", "speed", *TRAINING_RUNS)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("golden", help="reproduce the papers' results with the golden models")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--epochs", type=int, help="override the epochs of the training runs")
    parser.add_argument("--arch", type=parse_arch, help="override the architecture of the training runs")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def chosen_experiments(only: str | None, experiments: tuple[str, ...]) -> list[str]:
    """The experiments a comma-separated ``--only`` names (all when None); refuses unknown names."""
    from poise.errors import PoiseError

    chosen = only.split(",") if only else list(experiments)
    unknown = set(chosen) - set(experiments)
    if unknown:
        raise PoiseError(f"unknown experiment(s) {', '.join(sorted(unknown))}; choose from {', '.join(experiments)}")
    return chosen


def run(args: argparse.Namespace) -> int:

    chosen = chosen_experiments(args.only, EXPERIMENTS)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "golden.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in chosen:
        print(f"== {name}")
        if name == "convergence":
            entry = convergence(args.out)
        elif name == "speed":
            entry = speed()
        else:
            entry = training_run(name, args.out, args.epochs, not args.no_progress, args.arch)
        entry["date"] = datetime.date.today().isoformat()
        entry["command"] = command_line(args, name)
        results[name] = entry
        compare_runs(results)
        results_path.write_text(json.dumps(results, indent=1, sort_keys=True))
        print(json.dumps({k: v for k, v in entry.items() if k != "curves"}, indent=1, default=str))
    histories = {name: read_history(args.out / name) for name in TRAINING_RUNS if (args.out / name).is_dir()}
    if histories:
        plot_training_runs(args.out / "learning_curves.png", histories)
    (args.out / "golden.md").write_text(report(results))
    print(f"wrote {results_path} and {args.out / 'golden.md'}")
    return 0


def command_line(args: argparse.Namespace, name: str) -> str:
    """The command that reproduces experiment ``name`` with the options of this run."""
    words = ["poise bench golden --only", name]
    if args.epochs and name in TRAINING_RUNS:
        words.append(f"--epochs {args.epochs}")
    if args.arch and name in TRAINING_RUNS:
        words.append("--arch " + "-".join(map(str, args.arch)))
    return " ".join(words)


def report(results: dict[str, Any]) -> str:
    """Markdown tables of every recorded experiment, for BENCHMARKS.md."""
    lines = []
    runs = [name for name in TRAINING_RUNS if name in results]
    if runs:
        lines += ["| run | arch | epochs | mean test error, last 3 | best | target | pass | s/epoch | "
                  "spikes/img | SynOps/img | date |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name in runs:
            r = results[name]
            target = "—" if r["target_test_error"] is None else f"≤ {100 * r['target_test_error']:.2f}%"
            lines.append(
                f"| {name} | {r['arch']} | {r['epochs']} | {100 * r['mean_test_error_last_3']:.2f}% | "
                f"{100 * r['best_test_error']:.2f}% | {target} | {r.get('pass', '—')} | {r['seconds_per_epoch']:.1f} | "
                f"{count(r['spikes_per_image'])} | {count(r['synops_per_image'])} | {r['date']} |")
        lines.append("")
    if "asymmetric" in results and "alignment_final" in results["asymmetric"]:
        r = results["asymmetric"]
        lines += ["Feed-forward/feedback alignment of the asymmetric run, cos tr(W·F) per pair with feedback: "
                  f"{', '.join(f'{v:.3f}' for v in r['alignment_initial'])} before training, "
                  f"{', '.join(f'{v:.3f}' for v in r['alignment_final'])} after.", ""]
    if "convergence" in results:
        r = results["convergence"]
        lines += ["| convergence curve | error at t = 1000 |", "|---|---|"]
        lines += [f"| {label} | {value:.2e} |" for label, value in r["final_error"].items()]
        lines += ["", f"Annealed ΣΔ error(1000)/error(10) = {r['annealed_error_ratio_1000_over_10']:.4f} "
                  f"(target ≤ 0.03); stochastic/annealed at t = 1000: {r['stochastic_over_annealed_at_1000']:.1f}× "
                  f"(target > 10×); pass: {r['pass']} ({r['date']}).", ""]
    if "speed" in results:
        r = results["speed"]
        lines += [f"GEMM throughput measured in the same run: {r['gemm_gflops']:.1f} GFLOP/s ({r['date']}).", "",
                  "| model | s per 60k epoch | GEMM bound (s) | ratio |", "|---|---|---|---|"]
        lines += [f"| {name} | {row['seconds_per_epoch']:.1f} | {row['gemm_bound_seconds']:.1f} | {row['ratio']:.1f} |"
                  for name, row in r["models"].items()]
        lines.append("")
    return "\n".join(lines)


def count(value: float) -> str:
    """A per-image count for the report; models without spikes show a dash."""
    return f"{value:,.0f}" if value else "—"


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch metrics of a training run directory."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def plot_training_runs(path: Path, histories: dict[str, list[dict[str, Any]]]) -> None:
    """Test error per epoch of every training run, with each run's target as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for name, history in histories.items():
        if not history:
            continue
        line, = axes.plot([row["epoch"] for row in history], [100 * row["test_error"] for row in history],
                          marker=".", label=name)
        target = TRAINING_RUNS[name]["target"]
        if target is not None:
            axes.axhline(100 * target, color=line.get_color(), linestyle=":", linewidth=1)
    axes.set_xlabel("epoch")
    axes.set_ylabel("MNIST test error (%)")
    axes.set_yscale("log")
    axes.set_ylim(bottom=1.5)
    axes.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    axes.set_title("Golden models on MNIST (dotted: paper targets)")
    save_figure(figure, axes, path, legend_size=8)


def publish(out: Path, name: str, result: dict[str, Any], table: str, plot: Any, figure_name: str) -> None:
    """A bench's results: ``OUT/NAME.json``, the table as ``OUT/NAME.md`` (and on stdout), and
    ``plot(result, OUT/FIGURE_NAME)``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table)
    plot(result, out / figure_name)
    print(table)


def save_figure(figure: Any, axes: Any, path: Path, legend_size: int) -> None:
    """Grid, legend and layout of a bench plot, then write it as a PNG and free it."""
    import matplotlib.pyplot as plt

    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=legend_size)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- convergence to the continuous fixed point ----------------------------------------------------------
CONVERGENCE_CURVES: dict[str, tuple[Schedule, SpikingOptions]] = {
    "stochastic, ε=1/√t": (Schedule("power", 1.0, 0.5), SpikingOptions("stochastic", None)),
    "ΣΔ, ε=1/√t": (Schedule("power", 1.0, 0.5), SpikingOptions("sigma_delta", None)),
    "ΣΔ, ε=0.843/t^0.0923": (Schedule("power", 0.843, 0.0923), SpikingOptions("sigma_delta", None)),
    "ΣΔ + predictive, ε=0.843/t^0.0923, λ=0.832/t^0.584": (
        Schedule("power", 0.843, 0.0923), SpikingOptions("sigma_delta", Schedule("power", 0.832, 0.584))),
    "ΣΔ + predictive, OSA ε (ν̄=0.0346), λ=0.275": (
        Schedule("osa", osa_target=0.0346), SpikingOptions("sigma_delta", Schedule("constant", 0.275))),
}
ANNEALED = "ΣΔ + predictive, ε=0.843/t^0.0923, λ=0.832/t^0.584"
STOCHASTIC = "stochastic, ε=1/√t"


def convergence(out: Path, steps: int = 1000, batch: int = 20, seed: int = 1) -> dict[str, Any]:
    """Error(t) of the binary network against the continuous fixed point, [000] §4.1."""
    layers = (500, 500, 10)
    rng = np.random.default_rng(seed)
    params = {"w0": glorot_uniform(500, 500, rng), "b0": np.zeros(500, np.float32),
              "w1": glorot_uniform(500, 10, rng), "b1": np.zeros(10, np.float32)}
    x = rng.random((batch, 500), dtype=np.float32)
    reference = ContinuousEqProp(NetworkSpec(layers=layers, learning_rates=(0.0, 0.0)), params)
    fixed = reference.relax(reference.zero_states(batch), x @ params["w0"], 10000)
    curves: dict[str, list[float]] = {}
    for label, (epsilon, options) in CONVERGENCE_CURVES.items():
        spec = NetworkSpec(model="spiking", layers=layers, steps_free=steps, epsilon=epsilon,
                           learning_rates=(0.0, 0.0), spiking=options)
        errors = np.zeros(steps)

        def observe(k: int, states: list[np.ndarray], errors: np.ndarray = errors) -> None:
            errors[k] = np.mean([np.abs(s - f).mean() for s, f in zip(states, fixed, strict=True)])

        SpikingEqProp(spec, params).run(x, [Phase(steps)], np.random.default_rng(seed), observer=observe)
        curves[label] = errors.tolist()
    plot_convergence(out / "convergence.png", curves)
    annealed, stochastic = np.array(curves[ANNEALED]), np.array(curves[STOCHASTIC])
    ratio = float(annealed[-1] / annealed[9])
    advantage = float(stochastic[-1] / annealed[-1])
    return {
        "final_error": {label: values[-1] for label, values in curves.items()},
        "annealed_error_ratio_1000_over_10": ratio,
        "stochastic_over_annealed_at_1000": advantage,
        "pass": bool(ratio <= 0.03 and advantage > 10),
        "plot": str(out / "convergence.png"),
        "curves": curves,
    }


def plot_convergence(path: Path, curves: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, values in curves.items():
        axes.loglog(np.arange(1, len(values) + 1), values, label=label)
    axes.set_xlabel("step t")
    axes.set_ylabel("mean |s* − sᵗ|")
    axes.set_title("Binary network converging to the continuous fixed point (500-500-10)")
    save_figure(figure, axes, path, legend_size=7)


# -- speed against the GEMM bound ---------------------------------------------------------------------
def gemm_throughput(seconds: float = 2.0) -> float:
    """Sustained float32 GEMM rate (FLOP/s) of this machine, measured on a 3000×784×500 product."""
    a = np.random.default_rng(0).random((3000, 784), dtype=np.float32)
    b = np.random.default_rng(1).random((784, 500), dtype=np.float32)
    a @ b
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * 3000 * 784 * 500 * count / (time.perf_counter() - start)


def epoch_flops(spec: NetworkSpec, active_inputs: float) -> float:
    """Floating-point operations of the unavoidable matrix products of one 60k epoch.

    Continuous and current-mode: xᵀW₀ once per image plus every other layer product per step (both
    directions; untied weights have as many). Spike mode and EqSpike: the input drive is a product per
    step, over the pixels that can spike in each image (``active_inputs``, measured). Learning is not counted.
    """
    layers = spec.layers
    steps = spec.steps_free + spec.steps_nudge
    upper = sum(2 * 2 * layers[i] * layers[i + 1] for i in range(1, len(layers) - 1))  # both directions
    spike_input = spec.model == "eqspike" or (spec.spiking is not None and spec.spiking.input_mode == "spike")
    first = 2 * active_inputs * layers[1] * (steps - 1) if spike_input else 2 * layers[0] * layers[1]
    return 60000 * (first + upper * steps)


def speed(images: int = 2000) -> dict[str, Any]:
    """Train each model on ``images`` real MNIST images and scale to a 60k epoch."""
    from poise.golden.data import load_dataset, to_unit_interval

    data = load_dataset("mnist")
    x, y = to_unit_interval(data.train_images[:images]), data.train_labels[:images].astype(np.int64)
    flops_per_second = gemm_throughput()
    rows = {}
    configs = {
        "continuous": default_spec("continuous"),
        "spiking (spike input)": default_spec("spiking"),
        "spiking (current input)": default_spec("spiking").replace(spiking=SpikingOptions(input_mode="current")),
        "spiking, spike-triggered rule": default_spec("spiking").replace(
            spiking=SpikingOptions(rule="spike_triggered")),
        "eqspike 784-300-10, batch 20": default_spec("eqspike", (784, 300, 10)).replace(batch_size=20),
        "asymmetric": default_spec("asymmetric"),
    }
    for name, spec in configs.items():
        model = build_model(spec)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for first in range(0, images, spec.batch_size):
            model.train_batch(x[first:first + spec.batch_size], y[first:first + spec.batch_size], rng)
        seconds = (time.perf_counter() - start) * 60000 / images
        active = float((x > 0).sum(axis=1).mean())  # pixels that can spike, per image
        bound = epoch_flops(spec, active) / flops_per_second
        rows[name] = {"seconds_per_epoch": seconds, "gemm_bound_seconds": bound, "ratio": seconds / bound}
    return {"gemm_gflops": flops_per_second / 1e9, "models": rows}


# -- training runs ------------------------------------------------------------------------------------
def training_run(
    name: str, out: Path, epochs: int | None, progress: bool, arch: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Train one of ``TRAINING_RUNS`` on MNIST (resuming its checkpoint if there is one) and summarise it."""
    from poise.golden.data import load_dataset
    from poise.golden.train import train

    config = TRAINING_RUNS[name]
    spec = default_spec(config["model"], arch or config["arch"]).replace(**config.get("spec", {}))
    if "spiking" in config:
        spec = spec.replace(spiking=SpikingOptions(**{**spec.spiking.__dict__, **config["spiking"]}))
    epochs = epochs or config["epochs"]
    bundle = train(spec, load_dataset("mnist"), epochs, out / name, resume=(out / name / "checkpoint.npz").exists(),
                   progress=progress)
    history = bundle.info["history"]
    last = history[-3:]
    mean_error = float(np.mean([row["test_error"] for row in last]))
    entry = {
        "arch": spec.arch, "epochs": len(history), "mean_test_error_last_3": mean_error,
        "best_test_error": min(row["test_error"] for row in history),
        "final_train_error": history[-1]["train_error"],
        "seconds_per_epoch": float(np.mean([row["seconds"] for row in history])),
        "spikes_per_image": history[-1]["spikes_per_image"], "synops_per_image": history[-1]["synops_per_image"],
        "target_test_error": config["target"],
    }
    if config["target"] is not None:
        entry["pass"] = mean_error <= config["target"]
    if spec.model == "asymmetric":
        from poise.golden.asymmetric import alignment

        entry["alignment_initial"] = alignment(build_model(spec))
        entry["alignment_final"] = alignment(build_model(spec, bundle.params))
    return entry


def compare_runs(results: dict[str, Any]) -> None:
    """Judge the runs whose target is another run's error (``compare``), once both are recorded."""
    for name, config in TRAINING_RUNS.items():
        other = config.get("compare")
        if name in results and other in results:
            reference = results[other]["mean_test_error_last_3"]
            results[name]["target_test_error"] = reference + config["tolerance"]
            results[name]["pass"] = results[name]["mean_test_error_last_3"] <= reference + config["tolerance"]
