"""``poise verilog``: the network core of a fixed-point bundle as Verilog, with one ``$readmemh`` image per
memory and a JSON manifest of its ports, parameters and memory map."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poise.commands.train import positive_int
from poise.errors import PoiseError

FORMAT = "poise-verilog"
VERSION = 1
DEFAULT_NAME = "poise_core"
DEFAULT_LANES = 8
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Amaranth names the clock and reset of the core's one clock domain (``sync``) ``clk`` and ``rst``; they are
# not members of the component's signature.
DOMAIN_PORTS = (
    {"name": "clk", "direction": "input", "width": 1, "signed": False, "role": "clock (every register, rising edge)"},
    {"name": "rst", "direction": "input", "width": 1, "signed": False,
     "role": "synchronous reset, active high; clears the registers, not the memories"},
)

MEMORY_NOTE = (
    "Every memory's contents are also the initial values in the Verilog, so the .v file alone is complete. "
    "The .hex files (one $readmemh word per line, address 0 first, two's complement in the memory's width "
    "unless 'signed' is false) let you re-target a memory to a vendor block or patch weights and biases "
    "without regenerating the Verilog. A synchronous reset does not reload them."
)


@dataclass(frozen=True)
class MemoryImage:
    """The initial contents of one memory of the core: ``instance`` is its hierarchical name below the top."""

    file: str
    instance: str
    kind: str  # "weights", "bias" or "rom"
    width: int
    signed: bool
    words: np.ndarray

    @property
    def bits(self) -> int:
        return self.width * len(self.words)

    def hex_text(self) -> str:
        """``$readmemh`` text: one word per line, zero-padded to the width, two's complement when signed."""
        top = 1 << (self.width - 1)
        low, high = (-top, top - 1) if self.signed else (0, 2 * top - 1)
        words = np.asarray(self.words, np.int64)
        if len(words) and (words.min() < low or words.max() > high):
            raise PoiseError(f"{self.instance} holds values outside [{low}, {high}], which a {self.width}-bit "
                             f"{'signed' if self.signed else 'unsigned'} word cannot store; the bundle's "
                             "fixed-point spec is inconsistent: quantize the float bundle again")
        digits, mask = -(-self.width // 4), (1 << self.width) - 1
        return "".join(f"{int(word) & mask:0{digits}x}\n" for word in words)

    def describe(self) -> dict[str, Any]:
        return {"file": self.file, "instance": self.instance, "kind": self.kind, "depth": len(self.words),
                "width": self.width, "signed": self.signed}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verilog", help="write the network core of a fixed-point bundle as Verilog with memory images",
        description="Write the network core of a fixed-point bundle (poise quantize) as one Verilog file, "
        "a $readmemh image of every weight bank, the biases and the schedule ROMs, and a JSON manifest of "
        "its ports, parameters and memory map.",
    )
    parser.add_argument("bundle", type=Path, help="a fixed-point spiking bundle (poise quantize)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the files (created if missing)")
    parser.add_argument("--lanes", type=positive_int, default=DEFAULT_LANES,
                        help=f"synapse lanes P, a power of two (default {DEFAULT_LANES})")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"top module and file name (default {DEFAULT_NAME})")
    parser.add_argument("--lint", action="store_true", help="check the Verilog with verilator --lint-only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from poise.golden.bundle import load_bundle
    from poise.golden.integer import IntegerSpikingModel
    from poise.rtl.core import NetworkCore
    from poise.rtl.geometry import CoreGeometry
    from poise.sim.cocotb_runner import component_verilog

    name = args.name
    if not _IDENTIFIER.fullmatch(name):
        raise PoiseError(f"--name {name!r} is not a Verilog module name: use letters, digits and _, "
                         "not starting with a digit")
    if args.out.exists() and not args.out.is_dir():
        raise PoiseError(f"--out {args.out} is a file; give a folder (it is created if missing)")
    bundle = load_bundle(args.bundle)
    if bundle.fixed is None:
        from poise.boards.memory import BOARDS

        raise PoiseError(f"{args.bundle} has no fixed-point spec, which the RTL needs; make one with "
                         f"poise quantize {args.bundle} --board {'|'.join(sorted(BOARDS))}")
    try:
        geometry = CoreGeometry(bundle.spec, bundle.fixed, args.lanes)
    except PoiseError as error:
        raise PoiseError(f"--lanes {args.lanes}: {error}; use 1, 2, 4, 8, 16, …") from None
    model = IntegerSpikingModel.from_bundle(bundle)
    core = NetworkCore(geometry, model.weights, model.biases)
    verilog_text = component_verilog(core, name)

    images = memory_images(geometry, core)
    contents = {f"{name}.v": verilog_text.encode()}
    contents.update((image.file, image.hex_text().encode()) for image in images)
    files = [{"name": file, "bytes": len(text), "sha256": hashlib.sha256(text).hexdigest()}
             for file, text in contents.items()]
    manifest = build_manifest(name, args.bundle, bundle, geometry, core, images, files)
    manifest_file = f"{name}.json"
    contents[manifest_file] = (json.dumps(manifest, indent=1) + "\n").encode()

    stale = sorted(path.name for path in args.out.glob("*.hex") if path.name not in contents) \
        if args.out.is_dir() else []
    write_files(args.out, contents)
    lint = None
    if args.lint:
        lint_verilog(args.out / f"{name}.v", name)
        lint = "clean"

    bits = memory_bits(images)
    if args.json:
        print(json.dumps({"out": str(args.out), "top": name, "arch": bundle.spec.arch, "lanes": geometry.lanes,
                          "manifest": manifest_file,
                          "files": [*files, {"name": manifest_file, "bytes": len(contents[manifest_file])}],
                          "memory_bits": bits, "lint": lint}))
        return 0
    print_summary(args.out, name, bundle.spec.arch, geometry, contents, images, bits)
    if lint:
        print("verilator --lint-only: no warnings")
    if stale:
        print(f"note: {args.out} also holds {', '.join(stale)} from an earlier run; {manifest_file} lists the "
              "files of this one")
    return 0


# -- memory images ---------------------------------------------------------------------------------------------
def memory_images(geometry: Any, core: Any) -> list[MemoryImage]:
    """The initial contents of every memory the core initialises: the weight banks and biases in the core's
    memory map, then the schedule ROMs, in the shapes of the ROM words in ``poise.rtl.schedule``."""
    from amaranth.hdl import Shape

    from poise.rtl.clash import unclashed
    from poise.rtl.schedule import ROMS, word_names, words_layout

    fixed = geometry.fixed
    images = [MemoryImage(f"w{layer}_bank{bank}.hex", f"w{layer}_bank{bank}", "weights", fixed.weight.width, True,
                          banks[bank])
              for layer, banks in enumerate(core.weight_images) for bank in range(geometry.lanes)]
    images.append(MemoryImage("bias.hex", unclashed("bias"), "bias", fixed.bias.width, True, core.bias_image))
    shapes = words_layout(fixed).members
    for word in word_names(fixed):
        table = ROMS[word]  # "epsilon_rom", "lambda_rom", "inv_lambda_rom"
        shape = Shape.cast(shapes[word])
        images.append(MemoryImage(f"{table.removesuffix('_rom')}.hex", f"schedule.{word}_rom", "rom", shape.width,
                                  shape.signed, np.asarray(getattr(fixed, table), np.int64)))
    return images


def memory_bits(images: list[MemoryImage]) -> dict[str, int]:
    bits: dict[str, int] = {}
    for image in images:
        bits[image.kind] = bits.get(image.kind, 0) + image.bits
    return bits


def write_files(folder: Path, contents: dict[str, bytes]) -> None:
    from poise.golden.bundle import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    for file, text in contents.items():
        atomic_write(folder / file, lambda handle, text=text: handle.write(text))


# -- the manifest ------------------------------------------------------------------------------------------------
def build_manifest(name: str, bundle_path: Path, bundle: Any, geometry: Any, core: Any,
                   images: list[MemoryImage], files: list[dict[str, Any]]) -> dict[str, Any]:
    from amaranth import __version__ as amaranth_version

    from poise import __version__
    from poise.golden.bundle import spec_sha256

    spec, fixed = bundle.spec, bundle.fixed
    return {
        "format": FORMAT, "version": VERSION, "top": name,
        "generator": {"poise": __version__, "amaranth": amaranth_version},
        "bundle": {
            "file": bundle_path.name, "arch": spec.arch, "checksum": stored_checksum(bundle_path, bundle),
            "spec_sha256": spec_sha256(spec, fixed),
            "spec_sha256_of": "sha256 of the JSON {\"spec\": ..., \"fixed\": ...} with sorted keys and no spaces",
        },
        "parameters": parameters(geometry),
        "conventions": {
            "ports": "interface members joined by '__' (command__payload); a stream transfers its payload on "
                     "a rising clk edge where valid and ready are both high; trace has no ready",
            "fields": "offsets in bits from the port's LSB; nested fields carry offsets from the same LSB",
        },
        "ports": ports(core),
        "memories": [image.describe() for image in images],
        "memory_note": MEMORY_NOTE,
        "files": files,
    }


def stored_checksum(path: Path, bundle: Any) -> str:
    """The checksum recorded in the bundle file (load_bundle has verified it), else the recomputed one."""
    from poise.golden.bundle import META

    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            return str(json.loads(archive[META].tobytes().decode())["checksum"])
    except (OSError, KeyError, ValueError):
        return bundle.checksum()


def parameters(geometry: Any) -> dict[str, Any]:
    """The network, its fixed-point arithmetic and the core's memory map."""
    from poise.golden.fixed import FixedFormat

    spec, fixed, options = geometry.spec, geometry.fixed, geometry.spec.spiking
    formats = {field.name: {"width": value.width, "frac": value.frac}
               for field in dataclasses.fields(fixed)
               if isinstance(value := getattr(fixed, field.name), FixedFormat)}
    weights = [{
        "matrix": f"w{layer}", "shape": [geometry.layers[layer], geometry.layers[layer + 1]],
        "banks": geometry.lanes, "depth": geometry.bank_depth(layer), "words_per_row": geometry.words(layer),
        "skewed": geometry.skewed(layer),
        "files": [f"w{layer}_bank{bank}.hex" for bank in range(geometry.lanes)],
    } for layer in range(geometry.matrices)]
    return {
        "layers": list(geometry.layers), "lanes": geometry.lanes, "P": geometry.lanes,
        "input_mode": options.input_mode, "steps_free": spec.steps_free, "steps_nudge": spec.steps_nudge,
        "rom_steps": fixed.steps, "continue_time": options.continue_time,
        "predictive_coding": fixed.lambda_rom is not None, "learning_rule": options.rule,
        "on_chip_learning": fixed.eta is not None, "eta": list(fixed.eta) if fixed.eta is not None else None,
        "two_beta": fixed.two_beta, "rounding": fixed.rounding, "learn_rounding": fixed.learn_rounding,
        "formats": formats,
        "memory_map": {
            "weights": weights,
            "weight_location": "weight (i, j) of w{l}: bank (j + i) mod P if skewed else j mod P, "
                               "address i * words_per_row + j div P; unused words are zero",
            "bias": {"depth": geometry.neurons, "span_start": list(geometry.span_start),
                     "order": "the non-input neurons, first hidden layer first"},
            "neuron_banks": {"depth": geometry.neuron_depth, "base": list(geometry.neuron_base)},
        },
    }


def ports(core: Any) -> list[dict[str, Any]]:
    """Every port of the core's Verilog module: the clock and reset, then the signature's members, with the
    field layout of every structured payload."""
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import In

    result = [dict(port) for port in DOMAIN_PORTS]
    for path, member, _ in core.signature.flatten(core):
        shape = Shape.cast(member.shape)
        port = {"name": "__".join(map(str, path)), "interface": str(path[0]), "member": str(path[-1]),
                "direction": "input" if member.flow == In else "output",
                "width": shape.width, "signed": shape.signed}
        fields = layout_fields(member.shape)
        if fields is not None:
            port["fields"] = fields
        result.append(port)
    return result


def layout_fields(shape: Any, base: int = 0) -> list[dict[str, Any]] | None:
    """``[{name, offset, width, signed[, fields]}]`` of a ``data.Layout`` (None for a plain shape)."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if not isinstance(shape, data.Layout):
        return None
    fields = []
    for key, field in shape:
        entry = {"name": str(key), "offset": base + field.offset, "width": field.width,
                 "signed": Shape.cast(field.shape).signed}
        inner = layout_fields(field.shape, base + field.offset)
        if inner is not None:
            entry["fields"] = inner
        fields.append(entry)
    return fields


# -- lint and summary --------------------------------------------------------------------------------------------
def lint_verilog(path: Path, top: str) -> None:
    """``verilator --lint-only`` with the project's three suppressions; raises PoiseError on any report."""
    from poise.sim.cocotb_runner import VERILATOR_ARGS, verilator_path

    command = [str(verilator_path()), "--lint-only", *VERILATOR_ARGS, "--top-module", top, str(Path(path).resolve())]
    with tempfile.TemporaryDirectory() as scratch:  # Verilator may leave files in its working folder
        done = subprocess.run(command, cwd=scratch, capture_output=True, text=True, timeout=600, check=False)
    reports = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("%")]
    if done.returncode != 0 or reports:
        shown = "\n".join((reports or (done.stdout + done.stderr).splitlines())[:20])
        raise PoiseError(f"verilator --lint-only {' '.join(VERILATOR_ARGS)} reports problems in {path} "
                         f"(exit status {done.returncode}); the files are written, but the Verilog needs a fix "
                         f"in the generator:\n{shown}")


def print_summary(out: Path, name: str, arch: str, geometry: Any, contents: dict[str, bytes],
                  images: list[MemoryImage], bits: dict[str, int]) -> None:
    def size(count: int) -> str:
        return f"{count / 1024:.1f} KiB"

    print(f"{arch} core, {geometry.spec.spiking.input_mode} input, P = {geometry.lanes} lanes: top module {name}")
    print(f"wrote {out}: {name}.v ({size(len(contents[f'{name}.v']))}), "
          f"{name}.json ({size(len(contents[f'{name}.json']))})")
    for kind in bits:
        group = [image for image in images if image.kind == kind]
        label = group[0].file if len(group) == 1 else f"{len(group)} files {group[0].file} … {group[-1].file}"
        print(f"  {kind}: {label} ({size(sum(len(contents[image.file]) for image in group))}), "
              f"{bits[kind]} memory bits")
