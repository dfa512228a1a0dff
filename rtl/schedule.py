"""Schedule ROM: the ε, λ and 1/λ words of step t for the neuron pipeline ([000] O'Connor et al. 2019 §4.1)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from poise.golden.fixed import FixedPointSpec
from poise.rtl.implementation import GENERIC, Implementation
from poise.rtl.neuron import input_layout
from poise.rtl.stage import FixedPointStage

WORDS = ("epsilon", "lam", "inv_lam")
"""The ROM words, named as in the neuron pipeline's input payload."""

ROMS = {"epsilon": "epsilon_rom", "lam": "lambda_rom", "inv_lam": "inv_lambda_rom"}
"""The :class:`~poise.golden.fixed.FixedPointSpec` table behind each word."""


def word_names(fixed: FixedPointSpec) -> tuple[str, ...]:
    """The words ``fixed`` has: without predictive coding only ``epsilon``."""
    return tuple(name for name in WORDS if getattr(fixed, ROMS[name]) is not None)


def index_shape(fixed: FixedPointSpec) -> unsigned:
    """The step counter t: 1-based, up to T = ``fixed.steps``."""
    return unsigned(fixed.steps.bit_length())


def request_layout(fixed: FixedPointSpec) -> data.StructLayout:
    """Payload of a lookup: the step counter ``t``, as :class:`~poise.golden.integer.IntegerSpikingModel` counts it."""
    return data.StructLayout({"t": index_shape(fixed)})


def words_layout(fixed: FixedPointSpec) -> data.StructLayout:
    """The ROM words of one step, with the names and shapes of :func:`poise.rtl.neuron.input_layout`."""
    fields = input_layout(fixed).members
    return data.StructLayout({name: fields[name] for name in word_names(fixed)})


def response_layout(fixed: FixedPointSpec) -> data.StructLayout:
    """Payload of a result: the words of :func:`words_layout`, then ``error``, set when t lay outside 1..T."""
    return data.StructLayout({**words_layout(fixed).members, "error": 1})


class ScheduleROM(FixedPointStage):
    """The step schedules ε_t, λ_t and (1/λ)_t ([000] §4.1) as read-only memories, one lookup per cycle.

    A request carries the 1-based step counter t; the response carries ``epsilon_rom[t − 1]``,
    ``lambda_rom[t − 1]`` and ``inv_lambda_rom[t − 1]`` of ``fixed``, exactly as the integer model indexes
    them (with ``continue_time`` the nudged phase goes on counting past the free phase; ``fixed.steps`` covers
    it). Without predictive coding there are no λ memories and only ``epsilon`` is carried.

    Out of range: the integer model never reads past its tables (it refuses a run whose t exceeds T), so the
    sequencer must only ask for t in 1..T. A request for t = 0 or t > T is still answered, in order, with
    ``error = 1`` and every word zero, never with whatever the memory holds at a wrapped address. Zero words
    make the neuron hold v and s (λ = ε = 0) and send a = ρ_prev (1/λ = 0).

    One register stage: each memory has a synchronous read port whose enable is ``i.ready``, so a result
    appears on ``o`` the cycle after its request is taken and holds while ``o.ready`` is low.
    ``i.ready = ~o.valid | o.ready``: back-pressure passes through combinationally.

    Parameters
    ----------
    fixed : FixedPointSpec
        The tables, their word formats and T.
    implementation : Implementation
        Whether synthesis builds the tables from logic rather than block RAM.

    Members
    -------
    i : ``In(stream.Signature(request_layout(fixed)))``
        Lookups: ``payload.t``.
    o : ``Out(stream.Signature(response_layout(fixed)))``
        Results, in request order.

    Raises
    ------
    TypeError
        If ``fixed`` is not a :class:`FixedPointSpec`.
    ValueError
        If a table holds negative words (the neuron's ROM ports carry no sign bit).
    """

    LATENCY = 1
    """Cycles from accepting a request to its result on ``o`` when nothing stalls."""

    def __init__(self, fixed: FixedPointSpec, implementation: Implementation = GENERIC) -> None:
        super().__init__(fixed)
        self._implementation = implementation

    @staticmethod
    def layouts(fixed: FixedPointSpec) -> tuple[data.Layout, data.Layout]:
        return request_layout(fixed), response_layout(fixed)

    @property
    def steps(self) -> int:
        """T, the largest valid step counter."""
        return self._fixed.steps

    def elaborate(self, platform: object) -> Module:
        """Build one memory per word, the range check and the output handshake."""
        fixed = self._fixed
        m = Module()
        t = self.i.payload.t
        in_range = Signal(name="in_range")
        m.d.comb += [
            in_range.eq((t >= 1) & (t <= fixed.steps)),
            self.i.ready.eq(~self.o.valid | self.o.ready),
        ]
        error = Signal(name="error")
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), error.eq(~in_range)]
        m.d.comb += self.o.payload.error.eq(error)

        shapes = words_layout(fixed).members
        for name in word_names(fixed):
            memory = Memory(shape=shapes[name], depth=fixed.steps, init=getattr(fixed, ROMS[name]),
                            attrs=self._implementation.memory_attrs(shapes[name], fixed.steps, rom=True))
            m.submodules[f"{name}_rom"] = memory
            port = memory.read_port()  # synchronous, enabled with i.ready: it holds while o stalls
            m.d.comb += [
                port.en.eq(self.i.ready),
                port.addr.eq(Mux(in_range, t - 1, 0)),
                getattr(self.o.payload, name).eq(Mux(error, 0, port.data)),
            ]
        return m
