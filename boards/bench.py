"""``poise bench boards``: every board's full build (resources, post-route Fmax, critical path) and what it
means for throughput, beside the published small-FPGA spiking networks.

Per board the bench builds the board's network (its embedded bundle, or ``--bundle BOARD=FILE``) with the
profile's lanes, then measures the network core's cycles per image on Verilator with real MNIST test images
(every result checked against the integer golden model, as ``poise bench core`` does) and the integer
model's accuracy on the 10,000 test images. From the same run:

- images/s at the post-route Fmax = Fmax / cycles per image, and at the profile's target clock;
- the UART bound of the PACKED encoding at the profile's baud rate (``poise bench stream``'s);
- the board's images/s, the smaller of compute and UART, and its milliseconds per image.

A build that does not fit is reported with nextpnr's utilisation (what it would need), not dropped. Results
go to ``OUT/boards.json`` (with the date and the command), ``OUT/boards.md`` and ``OUT/boards_resources.png``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

import numpy as np

from poise.commands.train import positive_int
from poise.errors import PoiseError

BOARD_NAMES = ("icebreaker", "orangecrab", "ulx3s")

RESOURCE_CLASSES = {
    "logic": ("ICESTORM_LC", "TRELLIS_COMB"),
    "flip-flops": ("TRELLIS_FF",),
    "block RAM": ("ICESTORM_RAM", "DP16KD"),
    "single-port RAM": ("ICESTORM_SPRAM",),
    "DSP": ("ICESTORM_DSP", "MULT18X18D"),
}
"""nextpnr's cell types grouped across families (an iCE40 logic cell holds a LUT4 and its flip-flop)."""

PUBLISHED = (
    {"name": "Spiker+", "network": "784-128-10 LIF", "device": "Xilinx", "logic_cells": 7612, "bram": 18,
     "ms_per_image": 0.78, "accuracy": 0.9385},
    {"name": "Flexi-NeurA", "network": "—", "device": "Xilinx", "logic_cells": 1623, "bram": 7,
     "ms_per_image": 1.1, "accuracy": 0.9723},
)
"""Published small-FPGA SNNs on MNIST, as their papers report them (not measured here)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("boards", help="build every board: resources, Fmax, images/s at Fmax")
    parser.add_argument("--boards", default=",".join(BOARD_NAMES), help="comma-separated boards (default all)")
    parser.add_argument("--bundle", action="append", default=[], metavar="BOARD=FILE",
                        help="a fixed-point bundle for one board (repeatable; default: the one its profile "
                             "embeds)")
    parser.add_argument("--images", type=positive_int, default=5,
                        help="MNIST test images for the cycles per image on Verilator (default 5)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(func=run)


def board_bundles(boards: list[str], options: list[str]) -> dict[str, Path]:
    """The bundle each board builds: ``BOARD=FILE`` options first, then the profile's."""
    from poise.boards.profiles import board_profile

    given: dict[str, Path] = {}
    for option in options:
        board, separator, file = option.partition("=")
        if not separator or board not in boards:
            raise PoiseError(f"--bundle takes BOARD=FILE with BOARD one of {', '.join(boards)}, not {option!r}")
        given[board] = Path(file)
    return {board: given.get(board) or board_profile(board).default_bundle() for board in boards}


def resource_classes(utilization: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Used and available cells per resource class (:data:`RESOURCE_CLASSES`), for the classes present."""
    grouped = {}
    for name, types in RESOURCE_CLASSES.items():
        cells = [utilization[t] for t in types if t in utilization]
        if cells:
            grouped[name] = {"used": sum(c["used"] for c in cells), "available": sum(c["available"] for c in cells)}
    return grouped


def throughput(fmax_mhz: float | None, target_hz: int, cycles: float, uart: float) -> dict[str, Any]:
    """Images/s at Fmax and at the target clock, the board's images/s (bounded by the UART) and ms per image."""
    at_fmax = None if fmax_mhz is None else fmax_mhz * 1e6 / cycles
    board = None if at_fmax is None else min(at_fmax, uart)
    return {"images_per_second_at_fmax": at_fmax, "images_per_second_at_target": target_hz / cycles,
            "uart_bound": uart, "board_images_per_second": board,
            "ms_per_image": None if board is None else 1e3 / board}


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from poise.boards.build import DoesNotFitError, build
    from poise.boards.memory import BOARDS
    from poise.boards.profiles import board_profile
    from poise.firmware.messages import Encoding
    from poise.golden.bench import publish
    from poise.golden.bundle import load_bundle
    from poise.golden.data import load_dataset
    from poise.golden.integer import IntegerSpikingModel
    from poise.sim.bench_core import core_case, measure
    from poise.sim.bench_stream import frame_sizes, uart_bound

    boards = args.boards.split(",")
    if unknown := set(boards) - set(BOARD_NAMES):
        raise PoiseError(f"unknown board {', '.join(sorted(unknown))} in --boards; "
                         f"choose from {', '.join(BOARD_NAMES)}")
    bundles = board_bundles(boards, args.bundle)
    mnist = load_dataset("mnist")
    test = mnist.test_images[:args.images], mnist.test_labels[:args.images]
    args.out.mkdir(parents=True, exist_ok=True)
    cycles_of: dict[tuple[str, int], float] = {}
    accuracy_of: dict[str, float] = {}
    entries = []
    for board in tqdm(boards, desc="boards", unit="board"):
        profile, path = board_profile(board), bundles[board]
        bundle = load_bundle(path)
        entry: dict[str, Any] = {"board": board, "device": BOARDS[board].device, "bundle": path.name,
                                 "network": bundle.spec.arch, "lanes": profile.soc.lanes,
                                 "target_mhz": profile.soc.clock_hz / 1e6}
        try:
            report = build(board, path, args.out / "build" / board, say=tqdm.write)
            entry |= {"fits": True, **report.to_json()}
        except DoesNotFitError as error:
            entry |= {"fits": False, "utilization": error.utilization, "fmax_mhz": None, "timing_met": False,
                      "error": str(error)}
        entry["resources"] = resource_classes(entry["utilization"])
        key = (str(path), profile.soc.lanes, profile.soc.implementation.shallow_neuron)
        if key not in cycles_of:
            case = core_case(bundle, bundle.spec.spiking.input_mode, profile.soc.lanes, *test)
            measured = measure(case, args.out / f"boards-core-{board}.json", f"{board} cycles/image",
                               profile.soc.implementation)
            if measured["mismatches"]:
                print("\n".join(measured["mismatches"]), file=sys.stderr)
                return 1
            cycles_of[key] = float(np.mean([r["cycles"] for r in measured["results"]]))
        if str(path) not in accuracy_of:
            predictions = IntegerSpikingModel.from_bundle(bundle).infer(mnist.test_images).predictions
            accuracy_of[str(path)] = float((predictions == mnist.test_labels).mean())
        request, reply = frame_sizes(test[0], bundle.spec.layers[-1], Encoding.PACKED)
        entry |= {"cycles_per_image": cycles_of[key], "accuracy": accuracy_of[str(path)],
                  **throughput(entry["fmax_mhz"], profile.soc.clock_hz, cycles_of[key],
                               uart_bound(profile.soc.baud, request, reply))}
        entries.append(entry)
        tqdm.write(summary_line(entry))
    options = "".join(f" --bundle {option}" for option in args.bundle)
    result = {"date": datetime.date.today().isoformat(),
              "command": f"poise bench boards --boards {args.boards}{options} --images {args.images}",
              "entries": entries, "published": list(PUBLISHED)}
    publish(args.out, "boards", result, markdown(result), plot, "boards_resources.png")
    return 0


def summary_line(entry: dict[str, Any]) -> str:
    fmax = "does not fit" if not entry["fits"] else f"Fmax {entry['fmax_mhz']:.1f} MHz"
    return (f"{entry['board']}: {fmax} (target {entry['target_mhz']:g} MHz), "
            f"{entry['cycles_per_image']:,.0f} cycles/image")


def _cells(resources: dict[str, dict[str, int]], name: str) -> str:
    cells = resources.get(name)
    if cells is None:
        return "—"
    return f"{cells['used']:,} / {cells['available']:,} ({cells['used'] / cells['available']:.0%})"


def markdown(result: dict[str, Any]) -> str:
    def number(value: float | None, digits: int = 0) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    lines = [
        f"`{result['command']}` ({result['date']})",
        "",
        "| board | network, lanes | logic | flip-flops | block RAM | DSP | Fmax / target (MHz) | timing "
        "| cycles/image | images/s at Fmax | UART bound | ms/image | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result["entries"]:
        r = e["resources"]
        timing = "does not fit" if not e["fits"] else ("PASS" if e["timing_met"] else "FAIL")
        lines.append(
            f"| {e['board']} ({e['device']}) | {e['network']}, {e['lanes']} | {_cells(r, 'logic')} | "
            f"{_cells(r, 'flip-flops')} | {_cells(r, 'block RAM')} | {_cells(r, 'DSP')} | "
            f"{number(e['fmax_mhz'], 1)} / {e['target_mhz']:g} | {timing} | {e['cycles_per_image']:,.0f} | "
            f"{number(e['images_per_second_at_fmax'])} | {e['uart_bound']:,.0f} | {number(e['ms_per_image'], 2)} | "
            f"{100 * e['accuracy']:.2f} % |")
    lines += ["", "Published small-FPGA SNNs on MNIST (their papers' figures, not measured here):", "",
              "| design | network | device | logic cells | block RAM | ms/image | accuracy |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['name']} | {p['network']} | {p['device']} | {p['logic_cells']:,} | {p['bram']} | "
              f"{p['ms_per_image']} | {100 * p['accuracy']:.2f} % |" for p in result["published"]]
    paths = [f"- {e['board']}: {e['critical_path']['total_ns']:.1f} ns, {e['critical_path']['start']} -> "
             f"{e['critical_path']['end']}, through {', '.join(e['critical_path']['sources']) or '—'}"
             for e in result["entries"] if e.get("critical_path")]
    if paths:
        lines += ["", "Critical paths (post-route):", "", *paths]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Use of each resource class per board, 100 % marking the device's limit."""
    import matplotlib.pyplot as plt

    from poise.golden.bench import save_figure

    classes = [name for name in RESOURCE_CLASSES if any(name in e["resources"] for e in result["entries"])]
    figure, axes = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / max(len(result["entries"]), 1)
    for k, entry in enumerate(result["entries"]):
        shares = [100 * entry["resources"][c]["used"] / entry["resources"][c]["available"]
                  if c in entry["resources"] else 0 for c in classes]
        label = f"{entry['board']} ({entry['network']}, P={entry['lanes']})"
        axes.bar(np.arange(len(classes)) + k * width, shares, width, label=label)
    axes.axhline(100, color="black", linewidth=0.8, linestyle="--")
    axes.set_xticks(np.arange(len(classes)) + width * (len(result["entries"]) - 1) / 2, classes)
    axes.set_ylabel("% of the device")
    axes.set_title("Board builds: resource use (above 100 %: does not fit)")
    save_figure(figure, axes, path, legend_size=8)
