# amaranth: UnusedElaboratable=no
"""The sigma-delta encoder RTL in Amaranth's simulator, bit for bit against the integer reference.

Some tests build encoders only to inspect or reject them, hence the linter switch on line 1.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator
from fixed_vectors import sigma_delta_vectors

from poise.golden.fixed import FixedFormat, sigma_delta_fixed
from poise.rtl.sigma_delta import SigmaDeltaEncoder, input_layout, output_layout


def simulate(
    fmt: FixedFormat, a: np.ndarray, phi: np.ndarray, rng: np.random.Generator, p_valid: float, p_ready: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stream ``(a, phi)`` through the encoder with random gaps and random back-pressure.

    Returns ``(q, phi_new, cycles)``. Checks the stream rules on the way: a result held back by
    ``o.ready = 0`` stays valid and unchanged, and nothing comes out that was not put in.
    """
    dut = SigmaDeltaEncoder(fmt)
    count = len(a)
    out: list[tuple[int, int]] = []
    cycles = 0

    async def bench(ctx):
        nonlocal cycles
        sent, offering, stalled = 0, False, None
        while len(out) < count:
            offering = offering or (sent < count and rng.random() < p_valid)  # never waits for ready
            ctx.set(dut.i.valid, offering)
            if offering:
                ctx.set(dut.i.payload, {"a": int(a[sent]), "phi": int(phi[sent])})
            ctx.set(dut.o.ready, rng.random() < p_ready)
            _, _, i_ready, o_valid, o_ready, o_payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload
            )
            cycles += 1
            if stalled is not None:
                assert o_valid, f"cycle {cycles}: o.valid dropped before the result was taken"
                assert o_payload.as_bits() == stalled, f"cycle {cycles}: o.payload changed while stalled"
            stalled = o_payload.as_bits() if o_valid and not o_ready else None
            if offering and i_ready:
                offering, sent = False, sent + 1
            if o_valid and o_ready:
                assert len(out) < sent, f"cycle {cycles}: a result came out before its request went in"
                out.append((o_payload.q, o_payload.phi))
            assert cycles < 20 * count + 100, f"stuck after {len(out)} of {count} results"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    result = np.array(out, dtype=np.int64).reshape(-1, 2)
    return result[:, 0], result[:, 1], cycles


def assert_bit_exact(fmt: FixedFormat, a: np.ndarray, phi: np.ndarray, q: np.ndarray, phi_new: np.ndarray) -> None:
    q_ref, phi_ref = sigma_delta_fixed(a, phi, fmt)
    bad = np.flatnonzero((q != q_ref) | (phi_new != phi_ref))
    assert bad.size == 0, f"{bad.size} of {len(a)} vectors differ; first ones:\n" + "\n".join(
        f"  vector {k}: a={a[k]} phi={phi[k]}: rtl q={q[k]} phi={phi_new[k]}, reference q={q_ref[k]} phi={phi_ref[k]}"
        for k in bad[:5]
    )


@pytest.mark.parametrize(
    "fmt", [FixedFormat(8, 4), FixedFormat(16, 12), FixedFormat(6, 5)], ids=lambda f: f"w{f.width}f{f.frac}"
)
def test_random_and_edge_vectors_with_back_pressure(fmt):
    rng = np.random.default_rng(fmt.width * 100 + fmt.frac)
    a, phi = sigma_delta_vectors(fmt, 3_000, rng)
    q, phi_new, _ = simulate(fmt, a, phi, rng, p_valid=0.7, p_ready=0.6)
    assert len(q) == len(a)
    assert_bit_exact(fmt, a, phi, q, phi_new)


def test_one_result_per_cycle_without_back_pressure():
    fmt = FixedFormat(8, 4)
    rng = np.random.default_rng(1)
    a, phi = sigma_delta_vectors(fmt, 500, rng)
    q, phi_new, cycles = simulate(fmt, a, phi, rng, p_valid=1.0, p_ready=1.0)
    assert cycles == len(a) + 1  # one cycle of latency, then one result per cycle
    assert_bit_exact(fmt, a, phi, q, phi_new)


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
