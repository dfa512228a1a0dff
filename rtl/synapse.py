"""The accumulate engine's arithmetic: a synapse lane (the accumulate, the current-mode drive and the sweep's
increment, for one target neuron) and a weight bank's learning write (docs/FIXED_POINT.md "On-chip
learning")."""

from __future__ import annotations

import enum

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from poise.golden.fixed import FixedFormat, FixedPointSpec
from poise.golden.integer import MAX_LR_SHIFT
from poise.rtl.geometry import CoreGeometry
from poise.rtl.neuron import constant_product, logic_product, round_shift, saturate, unsigned_word, wire


class SynapseOp(enum.IntEnum):
    """What a lane does with the weight it reads."""

    ACCUMULATE = 0  # u += w; when learning, w ← w + Δw of the target neuron
    DRIVE = 1  # drive += w·pixel (current mode, once per image)
    SWEEP = 2  # w ← w + Δw(pixel, Σ Δs) (current-mode learning of W₀, once per training image)


SWEEP_LATENCY = 2
"""Registers in a lane's sweep path: its inputs are held for ``SWEEP_LATENCY + 1`` cycles, the write is the last."""


def learn_add(m: Module, value: Value, increment: Value, noise: Value, fmt: FixedFormat, guard: int, name: str
              ) -> Value:
    """sat(w + ((Δw + r) >> g)): the golden model's ``learn_add``; r is a random word or 2^(g−1)."""
    return saturate(m, value + ((increment + noise) >> guard), fmt, name)


def increment(m: Module, product: Value, shift: int, fixed: FixedPointSpec, name: str) -> Value:
    """sat(rs(product, shift)) in the increment format: the golden model's ``increment`` once the product
    Δs·η (or pixel·ΣΔs·η₀) is formed. The learning-rate shift k is applied to the product first, as a floor:
    rs(⌊x / 2^k⌋, s) = rs(x, s + k) for both rounding rules, so the golden model's single rounding is exact."""
    return saturate(m, round_shift(product, shift, fixed.rounding), fixed.increment, name)


def eta_shift(fixed: FixedPointSpec) -> int:
    """The shift that takes Δs·η (state LSBs × η LSBs) to increment LSBs: F + K_η − f_inc."""
    return fixed.state.frac + fixed.eta_format.frac - fixed.increment.frac  # type: ignore[union-attr]


def request_fields(geometry: CoreGeometry) -> dict[str, object]:
    """What a lane reads: the ``op``; the ``weight`` of its synapse; the target neuron's ``u``, ``drive`` and
    Δs sum ``summed``; the row's ``pixel``; the learning-rate shift ``lr_shift``."""
    fixed = geometry.fixed
    return {
        "op": SynapseOp, "lr_shift": range(MAX_LR_SHIFT + 1), "weight": signed(fixed.weight.width),
        "u": signed(geometry.accumulator_bits), "drive": signed(geometry.drive_bits),
        "summed": signed(geometry.summed_bits), "pixel": unsigned_word(fixed.pixel),
    }


def result_fields(geometry: CoreGeometry) -> dict[str, object]:
    """What a lane gives back: the new u and drive (``*_next``) and which of them to write, and the sweep's
    increment Δw (``swept_increment``, valid ``SWEEP_LATENCY`` cycles after its inputs)."""
    fixed = geometry.fixed
    return {
        "u_next": signed(geometry.accumulator_bits), "drive_next": signed(geometry.drive_bits),
        "swept_increment": signed(fixed.increment.width), "write_u": 1, "write_drive": 1,
    }


def writes_weight(op: Value, learn: Value, fixed: FixedPointSpec) -> Value:
    """Whether an operation writes its weight back: an accumulate of a learning image, or a sweep (never
    without learning constants in the spec)."""
    if fixed.eta is None:
        return Const(0)
    return ((op == SynapseOp.ACCUMULATE) & learn) | (op == SynapseOp.SWEEP)


class SynapseLane(wiring.Component):
    """One lane, bit-exact with the golden model's accumulate pass, drive and sweep increment:

    - ``ACCUMULATE``: ``u + w``;
    - ``DRIVE``: ``drive + w·pixel``;
    - ``SWEEP``: ``Δw = sat(rs(pixel·ΣΔs·η₀, 8 + F + K_η − f_inc))``, the increment a
      :class:`WeightUpdate` then adds to the weight.

    The lane works for one target neuron; the weight's learning write happens in the weight's own bank
    (:class:`WeightUpdate`), so that no multiplexer between lanes and banks sits in a learning path. The
    sweep's two products are registered (``SWEEP_LATENCY`` = 2 cycles): the engine holds a sweep's inputs
    for three cycles and writes in the third; pixel·ΣΔs·η₀ in one cycle was the longest path of the design.

    With ``logic_products`` the products by the pixel are sums of partial products
    (:func:`~poise.rtl.neuron.logic_product`), not multiplier cells: for devices whose few DSP blocks the
    neuron pipeline needs. Then one product serves the drive and the sweep (no operation needs both).

    Every field is a port of its own: Verilator mis-schedules one struct-typed port that the core drives in
    parts, one of them conditionally (measured: the weight read as 0 on Verilator while Amaranth's simulator
    was right).
    """

    def __init__(self, geometry: CoreGeometry, logic_products: bool = False) -> None:
        self.geometry, self.logic_products = geometry, logic_products
        super().__init__({**{name: In(shape) for name, shape in request_fields(geometry).items()},
                          **{name: Out(shape) for name, shape in result_fields(geometry).items()}})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        fixed, op = self.geometry.fixed, self.op

        def by_pixel(value: Value) -> Value:
            return logic_product(value, self.pixel) if self.logic_products else value * self.pixel

        # From logic, one product serves both: the drive's weight·pixel and the sweep's ΣΔs·pixel.
        shared = self.logic_products and fixed.eta is not None
        if shared:
            pixel_product = wire(m, by_pixel(Mux(op == SynapseOp.SWEEP, self.summed, self.weight)), "pixel_product")
        m.d.comb += [
            self.u_next.eq(self.u + self.weight),
            self.drive_next.eq(self.drive + (pixel_product if shared else by_pixel(self.weight))),
            self.write_u.eq(op == SynapseOp.ACCUMULATE),
            self.write_drive.eq(op == SynapseOp.DRIVE),
        ]
        if fixed.eta is None:
            return m
        pixel_summed = Signal(signed(len(self.pixel) + len(self.summed) + 1), name="swept_pixel_summed")
        product = Signal(signed(len(pixel_summed) + fixed.eta[0].bit_length() + 1), name="swept_product")
        m.d.sync += [pixel_summed.eq(pixel_product if shared else by_pixel(self.summed)),
                     product.eq(constant_product(pixel_summed, fixed.eta[0]) >> self.lr_shift)]
        m.d.comb += self.swept_increment.eq(
            increment(m, product, fixed.pixel.frac + eta_shift(fixed), fixed, "swept_increment"))
        return m


class WeightUpdate(wiring.Component):
    """One weight's learning write, in the weight's bank: ``weight_next = sat(w + ((Δw + r) >> g))``, the
    golden model's ``learn_add`` with the random word (or 2^(g−1)) ``noise``.

    Members
    -------
    weight, increment, noise : ``In``, the stored weight, its increment Δw and the rounding word.
    weight_next : ``Out``, the learned weight.
    """

    def __init__(self, fixed: FixedPointSpec) -> None:
        self.fixed = fixed
        super().__init__({
            "weight": In(signed(fixed.weight.width)), "increment": In(signed(fixed.increment.width)),
            "noise": In(unsigned(max(fixed.guard, 1))), "weight_next": Out(signed(fixed.weight.width)),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        fixed = self.fixed
        m.d.comb += self.weight_next.eq(
            learn_add(m, self.weight, self.increment, self.noise, fixed.weight, fixed.guard, "learned"))
        return m
