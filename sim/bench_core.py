"""``poise bench core``: the network core's Verilog on Verilator with real MNIST test images, every result
checked against the integer golden model.

For each input mode and lane count P it measures cycles per inference image (and per training image), the
free phase's spikes and SynOps per image, and sets the cycles beside two bounds taken from the same run:

- the **SynOp bound**, one weight-memory access per SynOp per lane: SynOps / P cycles;
- the **neuron bound**, one neuron update per cycle: (non-input neurons) × (free-phase steps) cycles, which
  the single neuron pipeline cannot beat whatever P is.

The core also counts the cycles its synapse lanes are busy (the accumulate and drive passes); SynOps / P
over those cycles is how well the P lanes are used.

Results go to ``OUT/core.json`` (with the date and the command), ``OUT/core.md`` and ``OUT/core_cycles.png``.
A run with many images is the slow bit-exact regression of the core: any result that differs from the golden
model fails it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from poise.embedded import embedded_bundle
from poise.errors import PoiseError

MODES = ("current", "spike")
TESTBENCH = Path(__file__).with_name("core_bench_tb.py")
EMBEDDED_BUNDLE = embedded_bundle()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("core", help="cycles per image of the network core on Verilator (bit-exact)")
    parser.add_argument("--bundle", type=Path, default=EMBEDDED_BUNDLE,
                        help="a spiking model bundle, float or fixed (default: the embedded iCEBreaker bundle)")
    parser.add_argument("--lanes", default="1,2,4,8", help="comma-separated lane counts P (default 1,2,4,8)")
    parser.add_argument("--modes", default=",".join(MODES), help="input modes to run (default current,spike)")
    parser.add_argument("--images", type=int, default=20, help="MNIST test images per configuration (default 20)")
    parser.add_argument("--train-images", type=int, default=5,
                        help="MNIST training images per configuration, on-chip learning (default 5; 0: none)")
    parser.add_argument("--check-weights", action="store_true",
                        help="after training, read every weight back and compare it with the golden model's")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(func=run)


def core_case(bundle: Any, mode: str, lanes: int, images: np.ndarray, labels: np.ndarray, **options: Any
              ) -> Any:
    """The bundle's network in ``mode`` as a :class:`~poise.sim.core_driver.CoreCase`: its fixed-point spec
    when the bundle has one for this mode, else one derived for the mode (with the learning constants)."""
    from poise.golden.fixed import derive_fixed_spec
    from poise.golden.integer import IntegerSpikingModel
    from poise.sim.core_driver import CoreCase

    spec = bundle.spec
    if spec.model != "spiking" or spec.spiking is None:
        raise PoiseError(f"the core runs spiking networks; the bundle holds a {spec.model} model "
                         "(train one with poise train --model spiking)")
    fixed = bundle.fixed
    if spec.spiking.input_mode != mode or fixed is None or fixed.eta is None:
        spec = spec.replace(spiking=dataclasses.replace(spec.spiking, input_mode=mode))
        fixed = derive_fixed_spec(spec, bundle.params, learning=True)
    model = IntegerSpikingModel.from_float(spec, bundle.params, fixed)
    return CoreCase.from_model(model, lanes, images, labels, **options)


def measure(case: Any, out_json: Path, label: str, implementation: Any = None) -> dict[str, Any]:
    """Build (or reuse) the core of ``case`` (with a board's :class:`~poise.rtl.implementation.Implementation`,
    whose neuron pipeline depth changes the cycles), stream its images on Verilator, return the per-image
    results; a progress bar follows the images."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from poise.rtl.core import NetworkCore
    from poise.rtl.implementation import Implementation
    from poise.sim.cocotb_runner import run_cocotb

    out_json = out_json.resolve()  # the cocotb process runs in its build folder
    case_path = case.save(out_json.with_suffix(".npz"))
    progress = out_json.with_suffix(".progress")
    progress.unlink(missing_ok=True)
    core = NetworkCore(case.geometry, case.weights, case.biases, implementation or Implementation())
    started = time.perf_counter()
    params = {"case": str(case_path), "out": str(out_json), "progress": str(progress)}
    with ThreadPoolExecutor(1) as pool, tqdm(total=len(case.images), desc=label, unit="img", leave=False) as bar:
        running = pool.submit(run_cocotb, core, "network_core", TESTBENCH, params=params)
        while not running.done():
            time.sleep(0.5)
            done = int(progress.read_text() or 0) if progress.exists() else 0
            bar.update(max(0, done - bar.n))
        run = running.result()
    progress.unlink(missing_ok=True)
    results = json.loads(out_json.read_text())
    results["wall_seconds"] = time.perf_counter() - started
    results["built"] = run.built
    case_path.unlink()
    return results


def summarise(case: Any, inference: dict[str, Any], training: dict[str, Any] | None) -> dict[str, Any]:
    """Means per image and the two bounds, for one mode and lane count."""
    geometry = case.geometry
    rows = inference["results"]
    cycles = float(np.mean([r["cycles"] for r in rows]))
    synops = float(np.mean([r["synops"] for r in rows]))
    synop_bound = synops / geometry.lanes
    neuron_bound = float(geometry.neurons * case.spec.steps_free)
    entry = {
        "mode": geometry.spec.spiking.input_mode, "lanes": geometry.lanes, "images": len(rows),
        "cycles_per_image": cycles, "spikes_per_image": float(np.mean([r["spikes"] for r in rows])),
        "synops_per_image": synops, "synop_bound": synop_bound, "neuron_bound": neuron_bound,
        "ratio_to_synop_bound": synop_bound / cycles,
        "ratio_to_both_bounds": max(synop_bound, neuron_bound) / cycles,
        "synapse_cycles_per_image": float(np.mean([r["synapse_cycles"] for r in rows])),
        "lane_use": synop_bound / float(np.mean([r["synapse_cycles"] for r in rows])),
        "accuracy": float(np.mean([r["prediction"] == r["label"] for r in rows])),
        "bit_exact": not inference["mismatches"], "simulated_seconds": inference["seconds"],
    }
    if training is not None:
        entry |= {"train_images": len(training["results"]),
                  "cycles_per_training_image": float(np.mean([r["cycles"] for r in training["results"]])),
                  "training_bit_exact": not training["mismatches"]}
    return entry


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from poise.golden.bench import publish
    from poise.golden.bundle import load_bundle
    from poise.golden.data import load_dataset

    lanes = [int(word) for word in args.lanes.split(",")]
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        raise PoiseError(f"unknown input mode in --modes {args.modes}; choose from {', '.join(MODES)}")
    if args.images < 1 or args.train_images < 0:
        raise PoiseError("--images must be at least 1 and --train-images at least 0")
    bundle = load_bundle(args.bundle)
    mnist = load_dataset("mnist")
    args.out.mkdir(parents=True, exist_ok=True)
    test = mnist.test_images[:args.images], mnist.test_labels[:args.images]
    train = mnist.train_images[:args.train_images], mnist.train_labels[:args.train_images]
    entries = []
    configurations = [(mode, p) for mode in modes for p in lanes]
    for mode, p in tqdm(configurations, desc="core configurations", unit="config"):
        case = core_case(bundle, mode, p, *test)
        inference = measure(case, args.out / f"core-{mode}-{p}.json", f"{mode} P={p} inference")
        training = None
        if args.train_images:
            training = measure(core_case(bundle, mode, p, *train, train=True, check_weights=args.check_weights),
                               args.out / f"core-{mode}-{p}-train.json", f"{mode} P={p} training")
        entry = summarise(case, inference, training)
        entries.append(entry)
        tqdm.write(f"{mode} P={p}: {entry['cycles_per_image']:.0f} cycles/image, ratio to the SynOp bound "
                   f"{entry['ratio_to_synop_bound']:.2f}, bit-exact {entry['bit_exact']}")
    bundle_option = "" if args.bundle == EMBEDDED_BUNDLE else f" --bundle {args.bundle}"
    command = (f"poise bench core{bundle_option} --lanes {args.lanes} --modes {args.modes} "
               f"--images {args.images} --train-images {args.train_images}"
               + (" --check-weights" if args.check_weights else ""))
    report = {"date": datetime.date.today().isoformat(), "command": command, "bundle": args.bundle.name,
              "layers": list(bundle.spec.layers), "entries": entries}
    publish(args.out, "core", report, markdown(report), plot, "core_cycles.png")
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"`{report['command']}` ({report['date']}, network {'-'.join(map(str, report['layers']))})",
        "",
        "| input | P | images | cycles/image | SynOp bound | neuron bound | ratio to SynOp bound | ratio to both "
        "| synapse cycles/image | lane use | spikes/image | SynOps/image | cycles/training image | bit-exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["entries"]:
        train = f"{e['cycles_per_training_image']:,.0f}" if "cycles_per_training_image" in e else "—"
        exact = e["bit_exact"] and e.get("training_bit_exact", True)
        lines.append(f"| {e['mode']} | {e['lanes']} | {e['images']} | {e['cycles_per_image']:,.0f} | "
                     f"{e['synop_bound']:,.0f} | {e['neuron_bound']:,.0f} | {e['ratio_to_synop_bound']:.2f} | "
                     f"{e['ratio_to_both_bounds']:.2f} | {e['synapse_cycles_per_image']:,.0f} | {e['lane_use']:.2f} | "
                     f"{e['spikes_per_image']:,.0f} | {e['synops_per_image']:,.0f} "
                     f"| {train} | {exact} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    from poise.golden.bench import save_figure

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for mode in MODES:
        entries = [e for e in report["entries"] if e["mode"] == mode]
        if not entries:
            continue
        lanes = [e["lanes"] for e in entries]
        line, = axes.plot(lanes, [e["cycles_per_image"] for e in entries], "o-", label=f"{mode}: measured")
        axes.plot(lanes, [max(e["synop_bound"], e["neuron_bound"]) for e in entries], "--", color=line.get_color(),
                  label=f"{mode}: max(SynOps/P, neurons × steps)")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("synapse lanes P")
    axes.set_ylabel("cycles per inference image")
    axes.set_title("Network core on Verilator, MNIST test images")
    save_figure(figure, axes, path, legend_size=8)
