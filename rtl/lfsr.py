"""The learning unit's random source: the 32-bit Galois LFSR of :class:`poise.golden.fixed.Lfsr`, drawing up
to ``lanes`` words per cycle."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from poise.golden.fixed import LFSR_SEED, LFSR_WIDTH, lfsr_jumps


class LeapLfsr(wiring.Component):
    """``words[k]`` is the k-th next random word of :class:`~poise.golden.fixed.Lfsr` (``bits`` bits each, the
    low bits of the state after (k + 1)·``bits`` bit-serial steps). Asserting ``advance = n`` consumes the
    first n words this cycle: the state leaps (n·``bits`` steps) at the clock edge. Every word is an XOR of
    state bits (the LFSR is linear over GF(2)); the networks come from :func:`~poise.golden.fixed.lfsr_jumps`,
    the golden model's own jump table. The state resets to ``seed``.

    Members
    -------
    words : ``Out(data.ArrayLayout(unsigned(bits), lanes))``
        The next ``lanes`` words, in the order drawn.
    advance : ``In(range(lanes + 1))``
        How many of them this cycle uses.
    """

    def __init__(self, bits: int, lanes: int, seed: int = LFSR_SEED) -> None:
        if not 1 <= bits <= LFSR_WIDTH or lanes < 1 or not 0 < seed < 1 << LFSR_WIDTH:
            raise ValueError(f"need 1 <= bits <= {LFSR_WIDTH}, lanes >= 1 and a non-zero 32-bit seed")
        self.bits, self.lanes, self.seed = bits, lanes, seed
        super().__init__({
            "words": Out(data.ArrayLayout(unsigned(bits), lanes)),
            "advance": In(range(lanes + 1)),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        state = Signal(LFSR_WIDTH, init=self.seed)
        jumps = lfsr_jumps(self.bits, self.lanes)
        leaps = []
        for k in range(self.lanes):
            leap = Signal(LFSR_WIDTH, name=f"leap{k + 1}")
            for bit in range(LFSR_WIDTH):
                sources = [state[b] for b in range(LFSR_WIDTH) if int(jumps[k, b]) >> bit & 1]
                term = sources[0] if sources else 0
                for source in sources[1:]:
                    term = term ^ source
                m.d.comb += leap[bit].eq(term)
            m.d.comb += self.words[k].eq(leap[:self.bits])
            leaps.append(leap)
        following = state
        for k in reversed(range(self.lanes)):
            following = Mux(self.advance == k + 1, leaps[k], following)
        m.d.sync += state.eq(following)
        return m
