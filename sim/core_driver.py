"""Drive a :class:`~poise.rtl.core.NetworkCore` and check it against the integer golden model.

- :class:`CoreCase` is what a regression runs: a network in fixed point (raw weights and biases), the lane
  count and the images, saved to one NPZ file so that a cocotb test process can rebuild it.
- :class:`CocotbCore` feeds images and parameter accesses to the core's Verilog inside a cocotb test and
  collects its results and trace; cocotb is imported only there, so this module imports anywhere.
- :func:`trace_mismatch` and :func:`result_mismatch` compare the core with
  :class:`~poise.golden.integer.IntegerSpikingModel` and name the first difference: the step, the neuron
  and the variable.

Payloads are packed and unpacked with the core's own layouts, never with hand-written bit offsets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from amaranth.hdl import Shape

from poise.golden.fixed import FixedPointSpec
from poise.golden.integer import TRACED, IntegerSpikingModel, Trace
from poise.golden.spec import NetworkSpec
from poise.rtl.core import (
    CLASH_LAYOUT,
    command_layout,
    parameter_request_layout,
    parameter_response_layout,
    result_layout,
    trace_layout,
)
from poise.rtl.geometry import CoreGeometry


@dataclass
class CoreCase:
    """A network for the core (``spec``, ``fixed``, raw ``weights`` and ``biases``, ``lanes``) and the uint8
    ``images`` (B, n_in) with their ``labels`` to run through it."""

    spec: NetworkSpec
    fixed: FixedPointSpec
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    lanes: int
    images: np.ndarray
    labels: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: IntegerSpikingModel, lanes: int, images: np.ndarray, labels: np.ndarray,
                   **options: Any) -> CoreCase:
        return cls(model.spec, model.fixed, [w.copy() for w in model.weights], [b.copy() for b in model.biases],
                   lanes, np.asarray(images, np.uint8), np.asarray(labels, np.int64), options)

    @property
    def geometry(self) -> CoreGeometry:
        return CoreGeometry(self.spec, self.fixed, self.lanes)

    def model(self) -> IntegerSpikingModel:
        """A fresh integer model with the case's parameters (its LFSR at the reset seed, as the core's)."""
        return IntegerSpikingModel(self.spec, self.fixed, self.weights, self.biases)

    def save(self, path: Path) -> Path:
        meta = {"spec": self.spec.to_dict(), "fixed": self.fixed.to_dict(), "lanes": self.lanes,
                "options": self.options}
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)} | {f"b{i}": b for i, b in enumerate(self.biases)}
        np.savez(path, meta=json.dumps(meta), images=self.images, labels=self.labels, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> CoreCase:
        with np.load(path) as archive:
            meta = json.loads(str(archive["meta"]))
            spec = NetworkSpec.from_dict(meta["spec"])
            count = len(spec.layers) - 1
            return cls(spec, FixedPointSpec.from_dict(meta["fixed"]),
                       [archive[f"w{i}"] for i in range(count)], [archive[f"b{i}"] for i in range(count)],
                       meta["lanes"], archive["images"], archive["labels"], meta["options"])


# -- comparisons ------------------------------------------------------------------------------------------------
def trace_columns(geometry: CoreGeometry, words: Sequence[int]) -> dict[str, np.ndarray]:
    """The core's trace records (raw payload integers) as arrays per field, signed fields sign-extended."""
    layout = trace_layout(geometry)
    bits = np.array([int(w) for w in words], dtype=object)
    out = {}
    for name, member in layout:
        shape = Shape.cast(member.shape)
        width, signed = shape.width, shape.signed
        values = np.array([(int(w) >> member.offset) & ((1 << width) - 1) for w in bits], dtype=np.int64)
        if signed:
            values = np.where(values >> (width - 1) & 1, values - (1 << width), values)
        out[name] = values
    return out


def trace_mismatch(geometry: CoreGeometry, golden: Trace, records: dict[str, np.ndarray], context: str = ""
                   ) -> str | None:
    """None when the core's trace equals ``golden`` (every register, every neuron, every step, in order), else
    a report of the first difference: step, neuron and variable."""
    steps, neurons = golden.registers["s"].shape
    expected_order = (np.repeat(np.arange(steps), neurons), np.tile(np.arange(neurons), steps))
    count = len(records["step"])
    for k in range(min(count, steps * neurons)):
        step, neuron = int(records["step"][k]), int(records["neuron"][k])
        if (step, neuron) != (expected_order[0][k], expected_order[1][k]):
            return (f"{context}record {k}: the core updated neuron {neuron} at step {step}, expected neuron "
                    f"{expected_order[1][k]} at step {expected_order[0][k]}")
        for name in TRACED:
            got, want = int(records[name][k]), int(golden.registers[name][step, neuron])
            if got != want:
                layer = int(np.searchsorted(np.asarray(geometry.span_start), neuron, side="right"))
                local = neuron - geometry.span_start[layer - 1]
                return (f"{context}first difference at step {step} (t = {int(golden.t[step])}), neuron {neuron} "
                        f"(layer {layer}, index {local}), variable {name}: core {got}, golden {want}")
    if count != steps * neurons:
        return f"{context}the core traced {count} neuron updates, the golden model {steps * neurons}"
    return None


def result_mismatch(expected: dict[str, Any], got: dict[str, Any], context: str = "") -> str | None:
    """None when every field of ``expected`` (prediction, outputs, spikes, synops) equals ``got``'s."""
    for name, want in expected.items():
        if not np.array_equal(np.asarray(got[name]), np.asarray(want)):
            return f"{context}{name}: core {got[name]}, golden {want}"
    return None


def golden_results(model: IntegerSpikingModel, images: np.ndarray) -> list[dict[str, Any]]:
    """What the core's results must hold for inferences of ``images`` (B, n_in), one batched golden run."""
    result = model.infer(np.asarray(images, np.uint8))
    return [{"prediction": int(result.predictions[k]), "outputs": result.outputs[k].astype(np.int64),
             "spikes": int(result.spikes[k]), "synops": int(result.synops[k])} for k in range(len(images))]


# -- cocotb --------------------------------------------------------------------------------------------------------
class CocotbCore:
    """The core's Verilog in a cocotb test: inputs change after the falling edge, outputs are read once settled.

    ``dut`` is the top level written by :func:`~poise.sim.cocotb_runner.run_cocotb` for a ``NetworkCore``.
    """

    def __init__(self, dut: Any, geometry: CoreGeometry) -> None:
        self.dut, self.geometry = dut, geometry
        self.command = command_layout(geometry)
        self.result = result_layout(geometry)
        self.request = parameter_request_layout(geometry)
        self.response = parameter_response_layout(geometry)
        self.cycles = 0

    async def reset(self) -> None:
        from cocotb.clock import Clock
        from cocotb.triggers import FallingEdge

        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        for name in ("command", "pixels", "parameter_request"):
            getattr(dut, f"{name}__valid").value = 0
            getattr(dut, f"{name}__payload").value = 0
        dut.result__ready.value = 0
        dut.parameter_response__ready.value = 0
        for _ in range(2):
            await FallingEdge(dut.clk)
        dut.rst.value = 0

    async def _offer(self, name: str, bits: int) -> None:
        """Hold ``bits`` on stream ``name`` until the core takes it (at the next rising edge)."""
        from cocotb.triggers import FallingEdge, ReadOnly

        valid, payload, ready = (getattr(self.dut, f"{name}__{part}") for part in ("valid", "payload", "ready"))
        valid.value, payload.value = 1, bits
        for _ in range(100_000):
            await ReadOnly()
            taken = bool(ready.value)
            await FallingEdge(self.dut.clk)
            if taken:
                valid.value = 0
                return
        raise AssertionError(f"the core did not take {name} within 100000 cycles")

    async def run_image(self, pixels: np.ndarray, *, train: bool = False, learn: bool = False, label: int = 0,
                        beta_negative: bool = False, lr_shift: int = 0, trace: bool = True,
                        cycle_limit: int = 5_000_000) -> tuple[dict[str, Any], list[int]]:
        """One image: the command, the pixels, then cycles until the result. Returns the unpacked result and,
        with ``trace``, the raw trace words (sampled every cycle; without it, nothing is sampled on the way)."""
        from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

        dut = self.dut
        command = self.command.const({"train": int(train), "learn": int(learn), "label": int(label),
                                      "beta_negative": int(beta_negative), "lr_shift": lr_shift}).as_bits()
        await self._offer("command", command)
        dut.pixels__valid.value = 1
        for value in pixels:  # the core takes one pixel per cycle while loading
            dut.pixels__payload.value = int(value)
            await ReadOnly()
            assert dut.pixels__ready.value, "the core stopped taking pixels in the middle of an image"
            await FallingEdge(dut.clk)
        dut.pixels__valid.value = 0
        words: list[int] = []
        if trace:
            for _ in range(cycle_limit):
                await ReadOnly()
                if dut.trace__valid.value:
                    words.append(dut.trace__payload.value.to_unsigned())
                if dut.result__valid.value:
                    break
                await FallingEdge(dut.clk)
            else:
                raise AssertionError(f"no result within {cycle_limit} cycles")
        else:
            if not dut.result__valid.value:
                await RisingEdge(dut.result__valid)
            await ReadOnly()
        view = self.result.from_bits(dut.result__payload.value.to_unsigned())
        result = {"prediction": int(view.prediction), "outputs": np.array([int(v) for v in view.outputs]),
                  "spikes": int(view.spikes), "synops": int(view.synops), "cycles": int(view.cycles),
                  "synapse_cycles": int(view.synapse_cycles)}
        await FallingEdge(dut.clk)
        dut.result__ready.value = 1
        await FallingEdge(dut.clk)
        dut.result__ready.value = 0
        self.check_clash()
        return result, words

    def check_clash(self) -> None:
        """Fail if a used read of a memory marked unclashed has met a write to its address since reset: on a
        board that read is undefined (:mod:`poise.rtl.clash`)."""
        flags = CLASH_LAYOUT.from_bits(self.dut.clash.value.to_unsigned())
        clashed = [name for name in CLASH_LAYOUT.members if getattr(flags, name)]
        assert not clashed, f"a used read met a write to its address in the memories {', '.join(clashed)}"

    async def access(self, *, layer: int, row: int = 0, col: int, bias: bool = False, value: int | None = None
                     ) -> tuple[int, bool]:
        """Read (``value`` None) or write one parameter between images; returns the response's value and its
        error flag."""
        from cocotb.triggers import FallingEdge, ReadOnly

        dut = self.dut
        bits = self.request.const({"write": int(value is not None), "bias": int(bias), "layer": layer, "row": row,
                                   "col": col, "value": 0 if value is None else int(value)}).as_bits()
        await self._offer("parameter_request", bits)
        dut.parameter_response__ready.value = 1
        for _ in range(100):
            await ReadOnly()
            if dut.parameter_response__valid.value:
                view = self.response.from_bits(dut.parameter_response__payload.value.to_unsigned())
                await FallingEdge(dut.clk)
                dut.parameter_response__ready.value = 0
                self.check_clash()
                return int(view.value), bool(view.error)
            await FallingEdge(dut.clk)
        raise AssertionError("no parameter response within 100 cycles")

    async def read_parameters(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every weight and bias, read back through the parameter port."""
        layers = self.geometry.layers

        async def read(**where: Any) -> int:
            value, error = await self.access(**where)
            assert not error, f"the core refused to read {where}"
            return value

        weights, biases = [], []
        for layer in range(len(layers) - 1):
            w = np.zeros((layers[layer], layers[layer + 1]), np.int64)
            for row in range(layers[layer]):
                for col in range(layers[layer + 1]):
                    w[row, col] = await read(layer=layer, row=row, col=col)
            weights.append(w)
            biases.append(np.array([await read(layer=layer, col=col, bias=True) for col in range(layers[layer + 1])],
                                   np.int64))
        return weights, biases
