"""One synapse lane and one weight bank's learning write in Amaranth's simulator against the integer golden
model's own arithmetic: the accumulate, the drive, the sweep's increment, and the read-modify-write with
stochastic or nearest rounding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Const, Module, Signal
from amaranth.sim import Simulator

from poise.golden.fixed import derive_fixed_spec
from poise.golden.integer import MAX_LR_SHIFT, IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.spec import SpikingOptions, default_spec
from poise.rtl.geometry import CoreGeometry
from poise.rtl.synapse import SWEEP_LATENCY, SynapseLane, SynapseOp, WeightUpdate, writes_weight


class FixedNoise:
    """Stands in for the golden model's LFSR: hands out the given words in order."""

    def __init__(self, words: np.ndarray) -> None:
        self.words_left = list(words)

    def words(self, count: int) -> np.ndarray:
        taken, self.words_left = self.words_left[:count], self.words_left[count:]
        return np.array(taken, np.int64)


def model_for(rounding: str) -> IntegerSpikingModel:
    spec = default_spec("spiking", (20, 9, 4)).replace(steps_free=8, steps_nudge=5,
                                                       spiking=SpikingOptions(input_mode="current"))
    params = build_model(spec).params
    return IntegerSpikingModel.from_float(spec, params, derive_fixed_spec(spec, params, learning=True,
                                                                          learn_rounding=rounding))


def edge_and_random(fmt_min: int, fmt_max: int, count: int, rng: np.random.Generator) -> np.ndarray:
    edges = np.unique(np.clip([fmt_min, fmt_min + 1, -1, 0, 1, fmt_max - 1, fmt_max], fmt_min, fmt_max))
    return np.concatenate([edges, rng.integers(fmt_min, fmt_max + 1, count - len(edges))])


@pytest.mark.parametrize("logic_products", [False, True], ids=["multipliers", "logic products"])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_synapse_lane_and_weight_update_are_the_golden_accumulate_drive_and_learning(rounding, logic_products):
    model, rng, count = model_for(rounding), np.random.default_rng(7), 400
    fixed = model.fixed
    geometry = CoreGeometry(model.spec, model.fixed, 2)
    weight = edge_and_random(fixed.weight.min_raw, fixed.weight.max_raw, count, rng)
    inc = edge_and_random(fixed.increment.min_raw, fixed.increment.max_raw, count, rng)
    pixel = edge_and_random(0, 255, count, rng)
    top = geometry.fixed.state.one * model.spec.steps_nudge
    summed = edge_and_random(-top, top, count, rng)
    u = rng.integers(-(1 << (geometry.accumulator_bits - 2)), 1 << (geometry.accumulator_bits - 2), count)
    drive = rng.integers(-(1 << (geometry.drive_bits - 2)), 1 << (geometry.drive_bits - 2), count)
    if rounding == "stochastic":
        noise = rng.integers(0, 1 << fixed.guard, count)
    else:
        noise = np.full(count, 1 << fixed.guard >> 1)
    model.lfsr = FixedNoise(noise)
    learned = model.learn_add(weight, inc, fixed.weight, "w")
    lr_shift = rng.integers(0, MAX_LR_SHIFT + 1, count)
    lr_shift[:4] = (0, 1, MAX_LR_SHIFT, 0)
    swept_increment = np.zeros(count, np.int64)
    for shift in np.unique(lr_shift):  # the golden model's rate scale is one number per image
        model.lr_shift = int(shift)
        chosen = lr_shift == shift
        swept_increment[chosen] = model.sweep_increment(pixel[chosen], summed[chosen])
    expected = {
        SynapseOp.ACCUMULATE: {"u_next": u + weight, "write_u": 1, "write_drive": 0},
        SynapseOp.DRIVE: {"drive_next": drive + weight * pixel, "write_u": 0, "write_drive": 1},
        SynapseOp.SWEEP: {"swept_increment": swept_increment, "write_u": 0, "write_drive": 0},
    }
    lane, update = SynapseLane(geometry, logic_products), WeightUpdate(fixed)
    top_module = Module()
    top_module.submodules.lane, top_module.submodules.update = lane, update
    got: dict[tuple[SynapseOp, int, str], int] = {}
    learned_got = []

    async def bench(ctx):
        for op in SynapseOp:
            for k in range(count):
                for name, values in (("weight", weight), ("pixel", pixel), ("summed", summed), ("u", u),
                                     ("drive", drive), ("lr_shift", lr_shift)):
                    ctx.set(getattr(lane, name), int(values[k]))
                ctx.set(lane.op, op)
                if op == SynapseOp.SWEEP:  # inputs held while the registered products fill
                    for _ in range(SWEEP_LATENCY):
                        await ctx.tick()
                await ctx.delay(1e-9)
                for name in expected[op]:
                    got[op, k, name] = ctx.get(getattr(lane, name))
        for k in range(count):
            for name, values in (("weight", weight), ("increment", inc), ("noise", noise)):
                ctx.set(getattr(update, name), int(values[k]))
            await ctx.delay(1e-9)
            learned_got.append(ctx.get(update.weight_next))

    sim = Simulator(top_module)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for op, fields in expected.items():
        for name, values in fields.items():
            values = np.broadcast_to(values, (count,))
            observed = np.array([got[op, k, name] for k in range(count)])
            assert np.array_equal(observed, values), f"{op.name}: {name}"
    assert np.array_equal(learned_got, learned), "the learning write: sat(w + ((Δw + r) >> g))"


def test_only_learning_accumulates_and_sweeps_write_weights_and_never_without_learning_constants():
    fixed = model_for("stochastic").fixed
    cases = [(op, learn) for op in SynapseOp for learn in (0, 1)]
    for spec, expected in ((fixed, [0, 1, 0, 0, 1, 1]),
                           (dataclasses.replace(fixed, eta=None, eta_format=None), [0] * 6)):
        m = Module()
        flags = []
        for op, learn in cases:
            flag = Signal()
            m.d.comb += flag.eq(writes_weight(Const(op, SynapseOp), Const(learn, 1), spec))
            flags.append(flag)
        observed = []

        async def bench(ctx, flags=flags, observed=observed):
            observed.extend(ctx.get(flag) for flag in flags)

        sim = Simulator(m)
        sim.add_testbench(bench)
        sim.run()
        assert observed == expected


@pytest.mark.parametrize("logic_products", [False, True])
def test_logic_products_leave_no_multiplier_cell(logic_products):
    model = model_for("nearest")
    text = rtlil.convert(SynapseLane(CoreGeometry(model.spec, model.fixed, 2), logic_products))
    assert ("cell $mul " in text) != logic_products
