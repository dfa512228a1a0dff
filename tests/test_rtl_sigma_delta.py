# amaranth: UnusedElaboratable=no
"""The sigma-delta encoder RTL in Amaranth's simulator, bit for bit against the integer reference.

Some tests build encoders only to inspect or reject them, hence the linter switch on line 1.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator
from fixed_vectors import assert_sigma_delta_exact, sigma_delta_vectors

from poise.golden.fixed import FixedFormat
from poise.rtl.sigma_delta import SigmaDeltaEncoder, input_layout, output_layout
from poise.sim.streams import columns, pack_fields, simulate_stream, unpack_fields


def simulate(
    fmt: FixedFormat, a: np.ndarray, phi: np.ndarray, rng: np.random.Generator, p_valid: float, p_ready: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stream ``(a, phi)`` through the encoder with :func:`simulate_stream` (random gaps, random back-pressure,
    stream rules checked); returns ``(q, phi_new, cycles)``."""
    rows, cycles = simulate_stream(SigmaDeltaEncoder(fmt), len(a), pack_fields(input_layout(fmt), {"a": a, "phi": phi}),
                                   unpack_fields(output_layout(fmt), ("q", "phi")), rng, p_valid, p_ready)
    got = columns(rows, ("q", "phi"))
    return got["q"], got["phi"], cycles


@pytest.mark.parametrize(
    "fmt", [FixedFormat(8, 4), FixedFormat(16, 12), FixedFormat(6, 5)], ids=lambda f: f"w{f.width}f{f.frac}"
)
def test_random_and_edge_vectors_with_back_pressure(fmt):
    rng = np.random.default_rng(fmt.width * 100 + fmt.frac)
    a, phi = sigma_delta_vectors(fmt, 3_000, rng)
    q, phi_new, _ = simulate(fmt, a, phi, rng, p_valid=0.7, p_ready=0.6)
    assert len(q) == len(a)
    assert_sigma_delta_exact(fmt, a, phi, q, phi_new)


def test_one_result_per_cycle_without_back_pressure():
    fmt = FixedFormat(8, 4)
    rng = np.random.default_rng(1)
    a, phi = sigma_delta_vectors(fmt, 500, rng)
    q, phi_new, cycles = simulate(fmt, a, phi, rng, p_valid=1.0, p_ready=1.0)
    assert cycles == len(a) + 1  # one cycle of latency, then one result per cycle
    assert_sigma_delta_exact(fmt, a, phi, q, phi_new)


def test_holds_one_result_while_stalled_and_drains_and_refills_in_one_cycle():
    fmt = FixedFormat(8, 4)
    dut = SigmaDeltaEncoder(fmt)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"a": 9, "phi": 0})  # q = 1, φ = -7
        assert ctx.get(dut.i.ready), "an empty stage must accept even while the consumer stalls"
        await ctx.tick()
        ctx.set(dut.i.payload, {"a": 3, "phi": 2})  # q = 0, φ = 5
        for _ in range(3):
            assert not ctx.get(dut.i.ready), "a full, stalled stage must refuse input"
            assert ctx.get(dut.o.valid)
            await ctx.tick()
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.i.ready), "a draining stage must accept in the same cycle"
        seen.append(ctx.get(dut.o.payload))
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        seen.append(ctx.get(dut.o.payload))
        assert ctx.get(dut.o.valid)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [(c.q, c.phi) for c in seen] == [(1, -7), (0, 5)]


def test_signature_uses_the_layouts():
    fmt = FixedFormat(10, 6)
    dut = SigmaDeltaEncoder(fmt)
    assert dut.fmt == fmt
    assert dut.i.payload.shape() == input_layout(fmt)
    assert dut.o.payload.shape() == output_layout(fmt)
    assert input_layout(fmt).size == 20
    assert output_layout(fmt).size == 11


def test_rejects_formats_without_a_half():
    with pytest.raises(ValueError, match="fraction bit"):
        SigmaDeltaEncoder(FixedFormat(8, 0))
    with pytest.raises(TypeError):
        SigmaDeltaEncoder((8, 4))
