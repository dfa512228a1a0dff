# amaranth: UnusedElaboratable=no
"""The neuron update pipeline in Amaranth's simulator, bit for bit against the per-neuron reference.

Some tests build components only to inspect or reject them, hence the linter switch on line 1.
"""

import dataclasses
from functools import cache

import numpy as np
import pytest
from amaranth.sim import Simulator
from neuron_vectors import assert_bit_exact, narrow_spec, neuron_vectors, small_model

from poise.golden.fixed import FixedPointSpec
from poise.golden.neuron_ref import OUTPUTS, input_fields, neuron_update
from poise.rtl.neuron import SHALLOW, STAGES, NeuronUpdate, input_layout, output_layout
from poise.sim.streams import columns, pack_fields, simulate_stream, unpack_fields


@cache
def spec(name: str) -> FixedPointSpec:
    """The specs under test: the derived default (spike mode, predictive coding), one without predictive
    coding (current mode) and one with formats narrow enough to saturate, floor rounding and 2|β| = 0.6."""
    if name == "default":
        return small_model().fixed
    if name == "no_predictive":
        return small_model("current", predictive=False).fixed
    return narrow_spec()


def simulate(fixed: FixedPointSpec, vectors: dict[str, np.ndarray], rng: np.random.Generator, p_valid: float,
             p_ready: float, shallow: bool = False, steady: bool = False) -> tuple[dict[str, np.ndarray], int]:
    """Stream the requests through a :class:`NeuronUpdate` with :func:`simulate_stream` (random gaps, random
    back-pressure, stream rules checked); returns the results (one array per output field) and the cycles."""
    rows, cycles = simulate_stream(NeuronUpdate(fixed, shallow, steady), len(vectors["u"]),
                                   pack_fields(input_layout(fixed), vectors),
                                   unpack_fields(output_layout(fixed), OUTPUTS), rng, p_valid, p_ready)
    return columns(rows, OUTPUTS), cycles


@pytest.mark.parametrize("shallow", [False, True], ids=["deep", "shallow"])
@pytest.mark.parametrize("name", ["default", "no_predictive", "narrow"])
def test_random_and_edge_vectors_with_back_pressure(name, shallow):
    fixed = spec(name)
    rng = np.random.default_rng(len(name))
    vectors = neuron_vectors(fixed, 4_000, rng)
    got, _ = simulate(fixed, vectors, rng, p_valid=0.7, p_ready=0.6, shallow=shallow)
    assert len(got["q"]) == len(vectors["u"])
    assert_bit_exact(fixed, vectors, got, neuron_update(fixed, vectors))


@pytest.mark.parametrize("shallow", [False, True], ids=["deep", "shallow"])
@pytest.mark.parametrize("name", ["default", "narrow"])
def test_steady_schedule_words_taken_from_the_input_with_back_pressure(name, shallow):
    """With ``steady_schedule`` the ROM words are not carried: requests that share one step's words (as in
    the core's neuron pass) come out the same as the reference's."""
    fixed = spec(name)
    rng = np.random.default_rng(11)
    vectors = neuron_vectors(fixed, 2_000, rng)
    for word in ("epsilon", "lam", "inv_lam"):
        if word in vectors:
            vectors[word] = np.full_like(vectors[word], vectors[word][len(vectors[word]) // 2])
    got, _ = simulate(fixed, vectors, rng, p_valid=0.7, p_ready=0.6, shallow=shallow, steady=True)
    assert_bit_exact(fixed, vectors, got, neuron_update(fixed, vectors))


@pytest.mark.parametrize("shallow", [False, True], ids=["deep", "shallow"])
def test_one_result_per_cycle_without_back_pressure(shallow):
    fixed = spec("default")
    rng = np.random.default_rng(7)
    vectors = neuron_vectors(fixed, 300, rng)
    got, cycles = simulate(fixed, vectors, rng, p_valid=1.0, p_ready=1.0, shallow=shallow)
    latency = NeuronUpdate(fixed, shallow).latency
    assert latency == (len(SHALLOW) if shallow else len(STAGES)) + 1
    assert cycles == len(vectors["u"]) + latency
    assert_bit_exact(fixed, vectors, got, neuron_update(fixed, vectors))


@pytest.mark.parametrize("shallow", [False, True], ids=["deep", "shallow"])
def test_stalled_pipeline_squeezes_bubbles_fills_up_then_drains_in_order(shallow):
    fixed = spec("default")
    dut = NeuronUpdate(fixed, shallow)
    depth = dut.latency
    vectors = neuron_vectors(fixed, depth + 2, np.random.default_rng(3))
    taken: list[int] = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        accepted = 0
        for cycle in range(2 * depth + 4):  # the consumer stalls; requests come every other cycle, leaving bubbles
            offering = cycle % 2 == 0
            ctx.set(dut.i.valid, offering)
            ctx.set(dut.i.payload, {name: int(vectors[name][accepted]) for name in input_fields(fixed)})
            _, _, i_ready = await ctx.tick().sample(dut.i.ready)
            accepted += int(offering and i_ready)
        assert accepted == depth, f"a stalled pipeline took {accepted} requests, not one per stage"
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        for _ in range(depth + 5):
            _, _, o_valid, o_payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if o_valid:
                taken.append(o_payload.v)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    first = {name: value[:depth] for name, value in vectors.items()}
    assert taken == list(neuron_update(fixed, first)["v"])


def test_layouts_follow_the_spec():
    fixed = spec("default")
    dut = NeuronUpdate(fixed)
    assert dut.predictive and dut.fixed == fixed
    assert dut.i.payload.shape() == input_layout(fixed)
    assert dut.o.payload.shape() == output_layout(fixed)
    assert list(input_layout(fixed).members) == list(input_fields(fixed))
    assert list(output_layout(fixed).members) == list(OUTPUTS)
    assert input_layout(fixed).members["epsilon"].width == fixed.epsilon_format.width - 1
    plain = NeuronUpdate(spec("no_predictive"))
    assert not plain.predictive and "lam" not in input_layout(plain.fixed).members


def test_rejects_what_it_cannot_build():
    fixed = spec("default")
    with pytest.raises(TypeError):
        NeuronUpdate(fixed.to_dict())
    with pytest.raises(ValueError, match="unsigned"):
        NeuronUpdate(dataclasses.replace(fixed, epsilon_rom=(-1, *fixed.epsilon_rom[1:])))
