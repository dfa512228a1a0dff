# amaranth: UnusedElaboratable=no
"""Quick checks of the core's parts in Amaranth's simulator and in Python: the leap-forward LFSR against the
golden model's, the memory map, the refusals, and the mismatch reports of the core regressions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from poise.errors import PoiseError
from poise.golden.fixed import Lfsr, derive_fixed_spec
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.spec import SpikingOptions, default_spec
from poise.rtl.core import NetworkCore
from poise.rtl.geometry import CoreGeometry
from poise.rtl.lfsr import LeapLfsr
from poise.sim.core_driver import trace_mismatch


@pytest.mark.parametrize(("bits", "lanes"), [(8, 8), (5, 3), (1, 1)])
def test_leap_lfsr_draws_the_golden_words_in_order(bits, lanes):
    """Random advances of 0..lanes words per cycle: the words used are the golden stream, in order."""
    dut, rng = LeapLfsr(bits, lanes), np.random.default_rng(bits)
    advances = rng.integers(0, lanes + 1, 300)
    used: list[int] = []

    async def bench(ctx):
        for advance in advances:
            ctx.set(dut.advance, int(advance))
            used.extend(ctx.get(dut.words[k]) for k in range(advance))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert used == Lfsr(bits).words(int(advances.sum())).tolist()


def small_model(mode: str = "current", layers: tuple[int, ...] = (9, 7, 5, 3)) -> IntegerSpikingModel:
    spec = default_spec("spiking", layers).replace(steps_free=6, steps_nudge=3,
                                                   spiking=SpikingOptions(input_mode=mode))
    params = build_model(spec).params
    return IntegerSpikingModel.from_float(spec, params, derive_fixed_spec(spec, params, learning=True))


@pytest.mark.parametrize("lanes", [1, 2, 4, 8])
def test_weight_banks_round_trip_and_rows_and_columns_use_every_bank_once(lanes):
    model = small_model()
    geometry = CoreGeometry(model.spec, model.fixed, lanes)
    for layer, weights in enumerate(model.weights):
        banks = geometry.weight_banks(layer, weights)
        assert np.array_equal(geometry.unpack_weights(layer, banks), weights)
        rows, cols = np.indices(weights.shape)
        bank, _ = geometry.weight_location(layer, rows, cols)
        for start in range(0, weights.shape[1] - lanes + 1, lanes):  # P consecutive weights of a row
            assert len(set(bank[0, start:start + lanes])) == lanes
        if geometry.skewed(layer):  # ... and of a column
            for start in range(0, weights.shape[0] - lanes + 1, lanes):
                assert len(set(bank[start:start + lanes, 0])) == lanes


def test_core_refuses_bad_lanes_parameters_and_short_roms():
    model = small_model()
    with pytest.raises(PoiseError, match="power of two"):
        CoreGeometry(model.spec, model.fixed, 3)
    geometry = CoreGeometry(model.spec, model.fixed, 2)
    too_big = [w.copy() for w in model.weights]
    too_big[1][0, 0] = model.fixed.weight.max_raw + 1
    with pytest.raises(PoiseError, match="weights lie outside"):
        NetworkCore(geometry, too_big, model.biases)
    short = dataclasses.replace(model.fixed, epsilon_rom=model.fixed.epsilon_rom[:4],
                                lambda_rom=model.fixed.lambda_rom[:4], inv_lambda_rom=model.fixed.inv_lambda_rom[:4])
    with pytest.raises(PoiseError, match="ROMs hold 4 steps"):
        NetworkCore(CoreGeometry(model.spec, short, 2), model.weights, model.biases)


def test_trace_mismatch_names_the_first_step_neuron_and_variable():
    model = small_model("spike")
    image = np.arange(9, dtype=np.uint8) * 20
    golden = model.trace(image, 1)
    geometry = CoreGeometry(model.spec, model.fixed, 2)
    steps, neurons = golden.registers["s"].shape
    records = {"step": np.repeat(np.arange(steps), neurons), "neuron": np.tile(np.arange(neurons), steps)}
    records |= {name: values.reshape(-1).copy() for name, values in golden.registers.items()}
    assert trace_mismatch(geometry, golden, records) is None
    records["phi"][5 * neurons + 12] += 1  # step 5, neuron 12: the first output neuron
    records["v"][6 * neurons] += 1
    report = trace_mismatch(geometry, golden, records)
    assert report == (f"first difference at step 5 (t = {golden.t[5]}), neuron 12 (layer 3, index 0), variable phi: "
                      f"core {golden.registers['phi'][5, 12] + 1}, golden {golden.registers['phi'][5, 12]}")
    truncated = {name: values[:-1] for name, values in records.items()}
    truncated["phi"][5 * neurons + 12] -= 1
    truncated["v"][6 * neurons] -= 1
    assert trace_mismatch(geometry, golden, truncated) == (f"the core traced {steps * neurons - 1} neuron updates, "
                                                          f"the golden model {steps * neurons}")
