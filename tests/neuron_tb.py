"""cocotb tests of the neuron update pipeline's Verilog, bit for bit against the per-neuron reference.

Started by ``tests/test_neuron_cocotb.py`` through :func:`poise.sim.cocotb_runner.run_cocotb` with params
``fixed`` (the :class:`~poise.golden.fixed.FixedPointSpec` as a dict), ``seed`` and ``count`` (the random
vectors are regenerated here from the seed) and, for ``replays_trace``, ``replay``: an NPZ file with the
requests (``in_<field>``) of a traced image and the registers each must produce (``out_<field>``).
Payloads are packed and unpacked with the component's own layouts, never with hand-written bit offsets.
"""

from __future__ import annotations

from typing import Any

import cocotb
import numpy as np
from neuron_vectors import assert_bit_exact, neuron_vectors

from poise.golden.fixed import FixedPointSpec
from poise.golden.neuron_ref import OUTPUTS, input_fields, neuron_update
from poise.rtl.neuron import NeuronUpdate, input_layout, output_layout
from poise.sim.cocotb_runner import tb_params
from poise.sim.streams import columns, pack_fields, reset, stream_through, unpack_fields


async def run_requests(dut: Any, fixed: FixedPointSpec, vectors: dict[str, np.ndarray], rng: np.random.Generator,
                       p_valid: float, p_ready: float) -> tuple[dict[str, np.ndarray], int]:
    """Stream the requests through with :func:`stream_through`; the results as one array per output field."""
    rows, cycles = await stream_through(dut, len(vectors["u"]), pack_fields(input_layout(fixed), vectors),
                                        unpack_fields(output_layout(fixed), OUTPUTS), rng, p_valid, p_ready)
    return columns(rows, OUTPUTS), cycles


def setup() -> tuple[FixedPointSpec, np.random.Generator, dict[str, Any]]:
    params = tb_params()
    return FixedPointSpec.from_dict(params["fixed"]), np.random.default_rng(params["seed"]), params


@cocotb.test()
async def matches_reference_under_back_pressure(dut: Any) -> None:
    """Edge and random requests, random input gaps and output stalls: every result bit-exact, in order."""
    fixed, rng, params = setup()
    vectors = neuron_vectors(fixed, params["count"], rng)
    await reset(dut)
    got, _ = await run_requests(dut, fixed, vectors, rng, p_valid=0.7, p_ready=0.6)
    assert_bit_exact(fixed, vectors, got, neuron_update(fixed, vectors))


@cocotb.test()
async def one_result_per_cycle(dut: Any) -> None:
    """With no gaps and no back-pressure, n results take n + LATENCY cycles."""
    fixed, rng, _ = setup()
    vectors = neuron_vectors(fixed, 400, rng)
    await reset(dut)
    got, cycles = await run_requests(dut, fixed, vectors, rng, p_valid=1.0, p_ready=1.0)
    assert cycles == len(vectors["u"]) + NeuronUpdate.LATENCY, f"{len(vectors['u'])} results took {cycles} cycles"
    assert_bit_exact(fixed, vectors, got, neuron_update(fixed, vectors))


@cocotb.test()
async def replays_trace(dut: Any) -> None:
    """The updates of a traced image give exactly the integer model's registers of the same step."""
    fixed, rng, params = setup()
    with np.load(params["replay"]) as archive:
        vectors = {name: archive[f"in_{name}"] for name in input_fields(fixed)}
        expected = {name: archive[f"out_{name}"] for name in OUTPUTS}
    await reset(dut)
    got, _ = await run_requests(dut, fixed, vectors, rng, p_valid=0.9, p_ready=0.8)
    assert_bit_exact(fixed, vectors, got, expected)
