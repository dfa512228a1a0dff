# amaranth: UnusedElaboratable=no
"""The schedule ROM in Amaranth's simulator, bit for bit against the spec's ε, λ and 1/λ tables.

Some tests build components only to inspect or reject them, hence the linter switch on line 1.
"""

import dataclasses
from functools import cache

import numpy as np
import pytest
from amaranth.sim import Simulator
from neuron_vectors import small_model
from schedule_vectors import assert_matches, expected, fields, lookups

from poise.golden.fixed import FixedPointSpec
from poise.rtl.neuron import input_layout
from poise.rtl.schedule import ScheduleROM, request_layout, response_layout, words_layout
from poise.sim.streams import columns, simulate_stream, unpack_fields


@cache
def spec(name: str) -> FixedPointSpec:
    """The derived default spec of a fresh 784-32-10 network (predictive coding), and one without λ tables."""
    return small_model(predictive=name == "default").fixed


def simulate(fixed: FixedPointSpec, t: np.ndarray, rng: np.random.Generator, p_valid: float, p_ready: float
             ) -> tuple[dict[str, np.ndarray], int]:
    """Stream the lookups through a :class:`ScheduleROM` with :func:`simulate_stream` (random gaps, random
    back-pressure, stream rules checked); returns the responses (one array per field) and the cycles."""
    layout = request_layout(fixed)
    rows, cycles = simulate_stream(ScheduleROM(fixed), len(t), lambda k: layout.const({"t": int(t[k])}).as_bits(),
                                   unpack_fields(response_layout(fixed), fields(fixed)), rng, p_valid, p_ready)
    return columns(rows, fields(fixed)), cycles


@pytest.mark.parametrize("name", ["default", "no_predictive"])
def test_every_index_matches_the_tables_under_back_pressure(name):
    fixed = spec(name)
    rng = np.random.default_rng(len(name))
    t = lookups(fixed, rng)
    got, _ = simulate(fixed, t, rng, p_valid=0.7, p_ready=0.6)
    assert len(got["error"]) == len(t)
    assert_matches(fixed, t, got)


def test_one_lookup_per_cycle_without_back_pressure():
    fixed = spec("default")
    rng = np.random.default_rng(5)
    t = lookups(fixed, rng)
    got, cycles = simulate(fixed, t, rng, p_valid=1.0, p_ready=1.0)
    assert cycles == len(t) + ScheduleROM.LATENCY
    assert_matches(fixed, t, got)


def test_stalled_result_holds_while_the_next_request_waits():
    fixed = spec("default")
    dut = ScheduleROM(fixed)
    seen: list[tuple[int, int, int]] = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.t, 7)
        _, _, i_ready = await ctx.tick().sample(dut.i.ready)
        assert i_ready, "an empty ROM stage refused a request"
        ctx.set(dut.i.payload.t, fixed.steps)  # waits behind the stalled first result
        for _ in range(3):
            _, _, i_ready, o_valid, epsilon = await ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.payload.epsilon)
            seen.append((int(i_ready), int(o_valid), epsilon))
        ctx.set(dut.o.ready, 1)
        _, _, i_ready, o_valid, epsilon = await ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.payload.epsilon)
        seen.append((int(i_ready), int(o_valid), epsilon))  # the first result leaves, the second request enters
        ctx.set(dut.i.valid, 0)
        _, _, o_valid, epsilon = await ctx.tick().sample(dut.o.valid, dut.o.payload.epsilon)
        seen.append((1, int(o_valid), epsilon))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    first, last = fixed.epsilon_rom[6], fixed.epsilon_rom[-1]
    assert first != last
    assert seen == [(0, 1, first)] * 3 + [(1, 1, first), (1, 1, last)]


def test_layouts_follow_the_neuron_pipeline():
    for name in ("default", "no_predictive"):
        fixed = spec(name)
        dut = ScheduleROM(fixed)
        assert dut.i.payload.shape() == request_layout(fixed)
        assert dut.o.payload.shape() == response_layout(fixed)
        neuron = input_layout(fixed).members
        assert dict(words_layout(fixed).members) == {k: neuron[k] for k in ("epsilon", "lam", "inv_lam")
                                                     if k in neuron}
        assert request_layout(fixed).members["t"].width == fixed.steps.bit_length()
    assert "lam" not in response_layout(spec("no_predictive")).members
    assert words_layout(spec("default")).members["epsilon"].width == spec("default").epsilon_format.width - 1


def test_reference_reads_the_tables_like_the_integer_model():
    fixed = spec("default")
    want = expected(fixed, np.array([1, fixed.steps, 0, fixed.steps + 1]))
    assert list(want["epsilon"]) == [fixed.epsilon_rom[0], fixed.epsilon_rom[-1], 0, 0]
    assert list(want["inv_lam"]) == [fixed.inv_lambda_rom[0], fixed.inv_lambda_rom[-1], 0, 0]
    assert list(want["error"]) == [0, 0, 1, 1]


def test_rejects_what_it_cannot_build():
    fixed = spec("default")
    with pytest.raises(TypeError):
        ScheduleROM(fixed.to_dict())
    with pytest.raises(ValueError, match="unsigned"):
        ScheduleROM(dataclasses.replace(fixed, lambda_rom=(-1, *fixed.lambda_rom[1:])))
