"""Neuron update pipeline: steps 2-5 of docs/FIXED_POINT.md for one neuron per cycle ([000] Eqs. 11-14)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data

from poise.golden.fixed import FixedFormat, FixedPointSpec
from poise.golden.neuron_ref import input_fields
from poise.rtl.sigma_delta import SigmaDeltaEncoder
from poise.rtl.stage import FixedPointStage


def unsigned_word(fmt: FixedFormat) -> unsigned:
    """A non-negative register of ``fmt`` without its sign bit."""
    return unsigned(fmt.width - 1)


def input_layout(fixed: FixedPointSpec) -> data.StructLayout:
    """Payload of an update request, raw in ``fixed``'s formats (the fields of
    :func:`poise.golden.neuron_ref.input_fields`).

    ``u`` accumulator; ``v`` decoded; ``s`` and ``rho_prev`` state, in [0, 2^F], without sign bit; ``phi``
    encoder; ``offset`` (bias plus current-mode drive, state LSBs) pressure; the ROM words ``epsilon``,
    ``lam`` and ``inv_lam`` (the last two only with predictive coding) unsigned, without sign bit; the flags
    ``nudge`` (an output neuron in a nudged phase), ``y`` (its target bit) and ``beta_negative`` (β < 0).
    """
    shapes = {
        "u": signed(fixed.accumulator.width),
        "v": signed(fixed.decoded.width),
        "s": unsigned_word(fixed.state),
        "rho_prev": unsigned_word(fixed.state),
        "phi": signed(fixed.encoder.width),
        "offset": signed(fixed.pressure.width),
        "epsilon": unsigned_word(fixed.epsilon_format),
        "lam": unsigned_word(fixed.lambda_format),
        "inv_lam": unsigned_word(fixed.inv_lambda_format),
        "nudge": 1,
        "y": 1,
        "beta_negative": 1,
    }
    return data.StructLayout({name: shapes[name] for name in input_fields(fixed)})


def output_layout(fixed: FixedPointSpec) -> data.StructLayout:
    """Payload of an update result: the new ``v`` (decoded), ``p`` (pressure), the new ``s`` and ``rho_prev``
    (the same value: ρ_prev of the next step is this step's s), ``a`` and the new ``phi`` (encoder), spike ``q``."""
    return data.StructLayout({
        "v": signed(fixed.decoded.width),
        "p": signed(fixed.pressure.width),
        "s": unsigned_word(fixed.state),
        "a": signed(fixed.encoder.width),
        "phi": signed(fixed.encoder.width),
        "rho_prev": unsigned_word(fixed.state),
        "q": 1,
    })


def round_shift(value: Value, shift: int, rounding: str) -> Value:
    """:func:`poise.golden.fixed.round_shift` in gateware: ``half_up`` adds 2^(shift−1) before the arithmetic
    right shift, ``floor`` only shifts; ``shift <= 0`` shifts left."""
    value = Value.cast(value)
    if shift <= 0:
        return value << -shift
    if rounding == "half_up":
        value = value + (1 << (shift - 1))
    elif rounding != "floor":
        raise ValueError(f"unknown rounding rule {rounding!r}")
    return value >> shift  # arithmetic: every operand here is signed


def signed_digits(constant: int) -> list[tuple[int, int]]:
    """The canonical signed-digit form of ``constant`` >= 0 as (digit ±1, shift) pairs: no two non-zero
    digits adjacent, so the fewest additions."""
    digits, shift = [], 0
    while constant:
        if constant & 1:
            digit = 2 - (constant & 3)  # +1 when the next bit is 0, −1 when it is 1 (a carry goes up)
            digits.append((digit, shift))
            constant -= digit
        constant >>= 1
        shift += 1
    return digits


def constant_product(value: Value, constant: int) -> Value:
    """``value · constant`` as shifts and adds in a balanced tree, with no multiplier: for products by
    learning rates and memory strides, where a DSP block would be wasted (the small FPGAs have 8 and 28)."""
    value = Value.cast(value)
    if not value.shape().signed:
        value = Cat(value, Const(0, 1)).as_signed()
    terms: list[Value] = [value << shift if digit > 0 else -(value << shift)
                          for digit, shift in signed_digits(abs(constant))]
    if not terms:
        return Const(0, 1)
    total = _tree_sum(terms)
    return -total if constant < 0 else total


def _tree_sum(terms: list[Value]) -> Value:
    """The sum of ``terms`` as a balanced tree of adds."""
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)]
    return terms[0]


def logic_product(value: Value, bits: Value) -> Value:
    """``value · bits`` for an unsigned ``bits`` as the sum of its partial products ``value << k`` where bit k
    is set: logic, never a multiplier cell (Yosys maps every ``*`` of this size to a DSP block, of which the
    UP5K has 8)."""
    value, bits = Value.cast(value), Value.cast(bits)
    assert not bits.shape().signed, "the partial products are taken over the bits of an unsigned operand"
    if not value.shape().signed:
        value = Cat(value, Const(0, 1)).as_signed()
    return _tree_sum([Mux(bits[k], value << k, 0) for k in range(len(bits))] or [Const(0, 1)])


def wire(m: Module, value: Value, name: str) -> Signal:
    """A combinational signal carrying ``value`` at its full width, so that the logic behind it (a multiplier)
    is built once however often the signal is used."""
    value = Value.cast(value)
    signal = Signal(value.shape(), name=name)
    m.d.comb += signal.eq(value)
    return signal


def clamp(m: Module, value: Value, low: int, high: int, name: str) -> Value:
    """``value`` clamped to ``[low, high]`` (saturation, never wrap-around)."""
    value = wire(m, value, name)
    return Mux(value > high, high, Mux(value < low, low, value))


def saturate(m: Module, value: Value, fmt: FixedFormat, name: str) -> Value:
    """:meth:`poise.golden.fixed.FixedFormat.saturate` in gateware."""
    return clamp(m, value, fmt.min_raw, fmt.max_raw, name)


STAGES = ("received", "differenced", "decoded", "pressed", "stepped", "integrated", "predicted", "encoded")
"""The register stages of the neuron pipeline, in order (the sigma-delta encoder's register follows)."""

SHALLOW = ("received", "decoded", "pressed", "integrated", "encoded")
"""The registers a shallow pipeline keeps: each multiplier's product goes on through its rounding and add in
the same cycle."""


class NeuronUpdate(FixedPointStage):
    """Steps 2-5 of the fixed-point neuron update, bit-exact with :func:`poise.golden.neuron_ref.neuron_update`.

    Per request, with ``rs`` the spec's rounding shift and every register saturating to its format:
    decoder ``v ← sat(v + rs((u·2^(F−f_w) − v)·λ_t))`` ([000] Eq. 13), pressure
    ``p = sat(v + offset ± rs((y − s)·2|β|))`` with the nudge on flagged outputs ([000] Eq. 14, [001] §2.7),
    state ``s ← clip(s + rs((p − s)·ε_t), 0, 1)`` ([000] Eq. 14), predictive encoder
    ``a = sat(ρ_prev + rs((s − ρ_prev)·(1/λ)_t))`` ([000] Eq. 12) and sigma-delta ``q``, ``φ`` ([000] Eq. 11,
    a :class:`~poise.rtl.sigma_delta.SigmaDeltaEncoder`). Without predictive coding (no λ ROM in ``fixed``)
    ``v = sat(u·2^(F−f_w))`` and ``a = s``, and the λ, 1/λ words and their multipliers do not exist.

    The neuron's state travels with the request and comes back updated; the component holds none. It is a
    pipeline of :attr:`LATENCY` register stages: the request as received; then for each of v, s and a a
    product stage (λ·(u − v), ε·(p − s), (1/λ)·(s − ρ_prev), registered as they leave the multiplier) and a
    stage that rounds, adds and saturates; p between v and s; then q and φ. 2|β| is a constant (a wire when
    it is a power of two). Without predictive coding the v and a product stages only carry their words, so
    the latency is the same. ``shallow`` keeps only the :data:`SHALLOW` registers (the three product stages
    become wires): fewer registers for a slow clock on a small device, the same results :attr:`latency`
    cycles after their requests. It accepts one request per cycle; a stage takes new data whenever it is
    empty or the stage after it moves on, so ``o.ready = 0`` stalls only as far back as needed and bubbles are
    squeezed out. ``i.ready`` depends combinationally on ``o.ready``. Results leave in request order.

    Parameters
    ----------
    fixed : FixedPointSpec
        Every width, fraction, rounding rule and 2|β|; predictive coding is on when it has λ ROMs.
    shallow : bool
        Build only the :data:`SHALLOW` register stages.
    steady_schedule : bool
        The caller keeps the ROM words (ε, λ, 1/λ on ``i``) the same while any request is in the pipeline (the
        core does: one step's words for a whole neuron pass); each stage then takes them from ``i`` instead of
        carrying them in its registers.

    Members
    -------
    i : ``In(stream.Signature(input_layout(fixed)))``
        Update requests.
    o : ``Out(stream.Signature(output_layout(fixed)))``
        Results, in request order.

    Raises
    ------
    TypeError
        If ``fixed`` is not a :class:`FixedPointSpec`.
    ValueError
        If a ROM word or 2|β| is negative (the ROM ports carry no sign bit).
    """

    LATENCY = len(STAGES) + 1
    """Cycles from accepting a request to its result on ``o`` when nothing stalls, all stages built."""

    def __init__(self, fixed: FixedPointSpec, shallow: bool = False, steady_schedule: bool = False) -> None:
        super().__init__(fixed)
        if fixed.two_beta < 0:
            raise ValueError(f"two_beta must be 2|β| >= 0, not {fixed.two_beta}")
        self._registers = SHALLOW if shallow else STAGES
        self._steady = steady_schedule

    @property
    def latency(self) -> int:
        """Cycles from accepting a request to its result on ``o`` when nothing stalls (the sigma-delta stage
        is the last)."""
        return len(self._registers) + 1

    @staticmethod
    def layouts(fixed: FixedPointSpec) -> tuple[data.Layout, data.Layout]:
        return input_layout(fixed), output_layout(fixed)

    @property
    def predictive(self) -> bool:
        """Whether the predictive decoder and encoder ([000] Eqs. 12-13) are built."""
        return self._fixed.lambda_rom is not None

    def elaborate(self, platform: object) -> Module:
        """Build the register stages, the sigma-delta stage and the ready chain between them."""
        fixed = self._fixed
        m = Module()
        m.submodules.encoder = encoder = SigmaDeltaEncoder(fixed.encoder)
        state = unsigned_word(fixed.state)
        stages: list[tuple[str, list]] = []  # each register's name and the statements that load it

        def rs(value: Value, fmt: FixedFormat) -> Value:
            return round_shift(value, fmt.frac, fixed.rounding)

        def stage(name: str, source: data.View, computed: dict[str, Value | tuple[Shape, Value]],
                  carried: tuple[str, ...]) -> data.View:
            """A register stage (a wire when the pipeline leaves ``name`` out): the ``computed`` words (at
            their own width, or at a given shape) from the stage before, and the ``carried`` words of
            ``source`` as they are."""
            members, loads = {}, {}
            for field, value in computed.items():
                shape, value = value if isinstance(value, tuple) else (Value.cast(value).shape(), value)
                members[field], loads[field] = shape, value
            for field in carried:
                members[field], loads[field] = source.shape().members[field], getattr(source, field)
            register = Signal(data.StructLayout(members), name=name)
            statements = [getattr(register, field).eq(value) for field, value in loads.items()]
            if name in self._registers:
                stages.append((name, statements))
            else:
                m.d.comb += statements
            return register

        # The ROM words: carried from stage to stage, or (steady) read from the input wherever they are used.
        carried = not self._steady
        eps = ("epsilon",) if carried else ()
        inv, lam = (("inv_lam",), ("lam",)) if self.predictive and carried else ((), ())
        words = ("s", "rho_prev", "phi", "offset", *eps, "nudge", "y", "beta_negative", *inv)
        received = stage("received", self.i.payload, {}, ("u", "v", *words, *lam))

        def rom(view: data.View, name: str) -> Value:
            return getattr(self.i.payload if self._steady else view, name)

        # Step 2, [000] Eq. 13: the predictive decoder.
        aligned = received.u << (fixed.state.frac - fixed.weight.frac)
        if self.predictive:
            differenced = stage("differenced", received, {"v_step": (aligned - received.v) * rom(received, "lam")},
                                ("v", *words))
            v = saturate(m, differenced.v + rs(differenced.v_step, fixed.lambda_format), fixed.decoded,
                         "v_unsaturated")
        else:
            differenced = stage("differenced", received, {"aligned": aligned}, words)
            v = saturate(m, differenced.aligned, fixed.decoded, "v_unsaturated")
        # The nudge of step 3 from the old s, sign applied after rounding; its register is as wide as it needs.
        error = Mux(differenced.y, fixed.state.one, 0) - differenced.s
        nudge = wire(m, rs(error * fixed.two_beta, fixed.beta_format), "nudge_magnitude")
        nudge = Mux(differenced.nudge, Mux(differenced.beta_negative, -nudge, nudge), 0)
        decoded = stage("decoded", differenced, {"v": (signed(fixed.decoded.width), v), "nudge_drive": nudge},
                        ("s", "rho_prev", "phi", "offset", *eps, *inv))

        # Step 3, [000] Eq. 14: the pressure on s.
        p = saturate(m, decoded.v + decoded.offset + decoded.nudge_drive, fixed.pressure, "p_unsaturated")
        pressed = stage("pressed", decoded, {"p": (signed(fixed.pressure.width), p)},
                        ("v", "s", "rho_prev", "phi", *eps, *inv))

        # Step 4, [000] Eq. 14: integrate and clip s to [0, 1].
        stepped = stage("stepped", pressed, {"s_step": (pressed.p - pressed.s) * rom(pressed, "epsilon")},
                        ("v", "p", "s", "rho_prev", "phi", *inv))
        s_new = clamp(m, stepped.s + rs(stepped.s_step, fixed.epsilon_format), 0, fixed.state.one, "s_unclipped")
        integrated = stage("integrated", stepped, {"s": (state, s_new)}, ("v", "p", "rho_prev", "phi", *inv))

        # Step 5, [000] Eq. 12: the predictive encoder.
        if self.predictive:
            predicted = stage("predicted", integrated,
                              {"a_step": (integrated.s - integrated.rho_prev) * rom(integrated, "inv_lam")},
                              ("v", "p", "s", "rho_prev", "phi"))
            a = saturate(m, predicted.rho_prev + rs(predicted.a_step, fixed.inv_lambda_format), fixed.encoder,
                         "a_unsaturated")
        else:
            predicted = stage("predicted", integrated, {}, ("v", "p", "s", "phi"))
            a = predicted.s
        encoded = stage("encoded", predicted, {"a": (signed(fixed.encoder.width), a)}, ("v", "p", "s", "phi"))
        assert [name for name, _ in stages] == list(self._registers)

        # Ready chain: a stage loads when it is empty or its content moves on this cycle.
        valid = [Signal(name=f"{name}_valid") for name, _ in stages]
        ready = [Signal(name=f"{name}_ready") for name, _ in stages]
        m.d.comb += self.i.ready.eq(ready[0])
        for k, (_, loads) in enumerate(stages):
            after = ready[k + 1] if k + 1 < len(stages) else encoder.i.ready
            m.d.comb += ready[k].eq(~valid[k] | after)
            with m.If(ready[k]):
                m.d.sync += [valid[k].eq(self.i.valid if k == 0 else valid[k - 1]), *loads]

        # Step 5, [000] Eq. 11: sigma-delta; the carried registers load exactly when the encoder does.
        sent = Signal(data.StructLayout({name: encoded.shape().members[name] for name in ("v", "p", "s", "a")}),
                      name="sent")
        m.d.comb += [
            encoder.i.valid.eq(valid[-1]),
            encoder.i.payload.a.eq(encoded.a),
            encoder.i.payload.phi.eq(encoded.phi),
            encoder.o.ready.eq(self.o.ready),
            self.o.valid.eq(encoder.o.valid),
            self.o.payload.q.eq(encoder.o.payload.q),
            self.o.payload.phi.eq(encoder.o.payload.phi),
            *(getattr(self.o.payload, name).eq(getattr(sent, name)) for name in ("v", "p", "s", "a")),
            self.o.payload.rho_prev.eq(sent.s),
        ]
        with m.If(encoder.i.ready):
            m.d.sync += [getattr(sent, name).eq(getattr(encoded, name)) for name in ("v", "p", "s", "a")]
        return m
