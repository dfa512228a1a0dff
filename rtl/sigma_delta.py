"""Sigma-delta spike encoder, one pipeline stage ([000] Eq. 11)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from poise.golden.fixed import FixedFormat


def input_layout(fmt: FixedFormat) -> data.StructLayout:
    """Payload of the encoder's input stream: the neuron's ``a`` and its current ``phi``, raw in ``fmt``."""
    return data.StructLayout({"a": signed(fmt.width), "phi": signed(fmt.width)})


def output_layout(fmt: FixedFormat) -> data.StructLayout:
    """Payload of the encoder's output stream: the spike ``q`` (1 bit) and the new ``phi``, raw in ``fmt``."""
    return data.StructLayout({"q": 1, "phi": signed(fmt.width)})


class SigmaDeltaEncoder(wiring.Component):
    """Fixed-point sigma-delta encoder, [000] Eq. 11: q = [φ + a > ½], φ ← φ + a − q.

    Bit-exact with :func:`poise.golden.fixed.sigma_delta_fixed`: the sum and difference are exact, the
    comparison with ½ is strict, and the new φ **saturates** to ``[fmt.min_raw, fmt.max_raw]`` (it never
    wraps around). The encoder holds no neuron state: φ travels with the request and comes back updated.

    It is a single register stage: a result appears on ``o`` the cycle after its request is accepted on
    ``i``, one result per cycle while the consumer is ready. ``i.ready`` is high whenever the output
    register is empty or being drained (``~o.valid | o.ready``), so back-pressure passes through
    combinationally and nothing is dropped or duplicated.

    Parameters
    ----------
    fmt : FixedFormat
        Format of ``a`` and ``φ`` (signed; needs ``frac >= 1`` so that ½ is exact).

    Members
    -------
    i : ``In(stream.Signature(input_layout(fmt)))``
        Requests: ``payload.a`` and ``payload.phi``.
    o : ``Out(stream.Signature(output_layout(fmt)))``
        Results: ``payload.q`` and ``payload.phi`` (the new φ).

    Raises
    ------
    ValueError
        If ``fmt.frac < 1``.
    """

    def __init__(self, fmt: FixedFormat) -> None:
        if not isinstance(fmt, FixedFormat):
            raise TypeError(f"fmt must be a FixedFormat, not {fmt!r}")
        if fmt.frac < 1:
            raise ValueError(f"sigma-delta needs at least one fraction bit to represent 1/2, not {fmt}")
        self._fmt = fmt
        super().__init__(
            {
                "i": In(stream.Signature(input_layout(fmt))),
                "o": Out(stream.Signature(output_layout(fmt))),
            }
        )

    @property
    def fmt(self) -> FixedFormat:
        """Format of ``a`` and ``φ``."""
        return self._fmt

    def elaborate(self, platform: object) -> Module:
        """Build the combinational update and the output register with its ready/valid handshake."""
        fmt = self._fmt
        m = Module()

        total = Signal(signed(fmt.width + 1))
        q = Signal()
        diff = Signal(signed(fmt.width + 2))
        phi_new = Signal(signed(fmt.width))
        m.d.comb += [
            total.eq(self.i.payload.a + self.i.payload.phi),
            q.eq(total > (fmt.one >> 1)),
            diff.eq(total - Mux(q, fmt.one, 0)),
            phi_new.eq(Mux(diff > fmt.max_raw, fmt.max_raw, Mux(diff < fmt.min_raw, fmt.min_raw, diff))),
        ]

        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [
                self.o.valid.eq(self.i.valid),
                self.o.payload.q.eq(q),
                self.o.payload.phi.eq(phi_new),
            ]
        return m
