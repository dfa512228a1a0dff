"""A board's twin: the board's SoC (its profile's clock and lanes) with a bundle's network, verilated behind a
pseudo-terminal (:mod:`poise.sim.twin`).

The one difference from the board: the twin's UART runs at 4 clock cycles per bit (6 Mbaud at 24 MHz) instead
of the board's divisor, because simulated cycles are what a twin spends its time on; INFO reports that baud
rate. Baud rates mean nothing on a pseudo-terminal, so the host notices no difference.

Writing the SoC's Verilog takes seconds and verilating it a minute, so both are cached: the Verilog under a
key made of the bundle's bytes, the profile and poise's own gateware sources; the executable under the hash
of that Verilog. A second start of the same twin only starts the process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import amaranth
import numpy as np

from poise.boards.profiles import BoardProfile, board_profile
from poise.golden.bundle import Bundle, load_bundle
from poise.golden.integer import IntegerSpikingModel
from poise.rtl.geometry import CoreGeometry
from poise.rtl.soc import SoC, SoCConfig
from poise.sim.cocotb_runner import component_verilog, sim_cache_root
from poise.sim.twin import Twin, TwinBuild, build_twin

TWIN_DIVISOR = 4
_SOURCES = ("rtl", "firmware", "golden", "sim")
"""Subpackages whose source decides the SoC's Verilog."""


@dataclass(frozen=True)
class BoardTwin:
    """A built twin: its profile, the bundle it carries and the executable."""

    profile: BoardProfile
    bundle_path: Path
    bundle: Bundle
    build: TwinBuild

    def start(self, link: Path | None = None) -> Twin:
        """Starts the twin (a context manager); ``link`` also names its port."""
        return Twin(self.build.executable, divisor=TWIN_DIVISOR, link=link).start()


def twin_config(profile: BoardProfile) -> SoCConfig:
    """The board's SoC configuration with the twin's UART divisor."""
    return dataclasses.replace(profile.soc, baud=profile.soc.clock_hz // TWIN_DIVISOR)


def build_soc(bundle: Bundle, profile: BoardProfile) -> SoC:
    """The twin's SoC of ``profile`` carrying ``bundle``'s network (its raw fixed-point parameters). On a board
    whose W₀ the bitstream cannot hold (:attr:`~poise.boards.profiles.BoardProfile.boot_loaded`) the twin
    starts as that board does after configuration, with W₀ zero, and the host loads it."""
    model = IntegerSpikingModel.from_bundle(bundle)
    geometry = CoreGeometry(bundle.spec, bundle.fixed, profile.soc.lanes)
    weights = [np.zeros_like(model.weights[0]), *model.weights[1:]] if profile.boot_loaded else model.weights
    return SoC(geometry, weights, model.biases, twin_config(profile))


def _source_digest() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(amaranth.__version__.encode())
    for folder in _SOURCES:
        for path in sorted((package / folder).glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def soc_verilog(bundle_path: Path, profile: BoardProfile, say: Callable[[str], None] = print) -> str:
    """The SoC's Verilog (top module ``top``), from the cache when this bundle, profile and source were
    converted before."""
    key = hashlib.sha256(Path(bundle_path).read_bytes() + repr(twin_config(profile)).encode()
                         + _source_digest().encode())
    path = sim_cache_root() / "twin-verilog" / f"{profile.name}-{key.hexdigest()[:16]}.v"
    if path.is_file():
        return path.read_text()
    say(f"writing the {profile.name} SoC's Verilog (once per bundle and poise version)")
    text = component_verilog(build_soc(load_bundle(bundle_path), profile), "top")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return text


def board_twin(board: str, bundle_path: Path | None = None, say: Callable[[str], None] = print) -> BoardTwin:
    """Builds (or finds in the cache) the twin of ``board`` carrying ``bundle_path`` (default: the board's
    embedded bundle)."""
    profile = board_profile(board)
    bundle_path = Path(bundle_path) if bundle_path is not None else profile.default_bundle()
    bundle = load_bundle(bundle_path)
    text = soc_verilog(bundle_path, profile, say)
    started = time.perf_counter()
    build = build_twin(text, "top", f"twin-{profile.name}")
    if build.built:
        say(f"verilated the {profile.name} twin in {time.perf_counter() - started:.0f} s (cached from now on)")
    return BoardTwin(profile, bundle_path, bundle, build)
