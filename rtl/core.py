"""The network core: the whole spiking network of :class:`~poise.golden.integer.IntegerSpikingModel` in
gateware, inference and on-chip training, bit for bit.

One image runs as a sequence of passes, each over a memory:

- **load**: the pixels arrive on ``pixels`` and are stored; the per-neuron memories are cleared (current
  mode: the drive and the learning sweep walk the stored pixels, a row of W₀ for each non-zero one);
- **drive** (current mode): W₀ᵀx, one row of W₀ per non-zero pixel, P multiply-accumulates per cycle;
- per step t, **accumulate**: for every spike of step t − 1, its weight row (pre-synaptic) or column
  (post-synaptic, hidden↔hidden and hidden↔output matrices) is read P weights per cycle and added to the
  targets' accumulators u; in a training image's nudged phase each weight read is written back with its
  spike-triggered increment (docs/FIXED_POINT.md "On-chip learning");
- **neuron update**: every non-input neuron, one per cycle, through :class:`~poise.rtl.neuron.NeuronUpdate`;
  spikes go to per-layer spike lists, which the next accumulate pass walks (events, not a scan); biases
  learn here, and the next step's increments are formed from the new s;
- **encode** (spike mode): the clamped pixels through the predictive encoder and sigma-delta, into the
  input spike list;
- **sweep** (current-mode training): W₀ learns once per image from the summed Δs of the first hidden layer.

The passes run in that order, so every read sees exactly the values the integer model's step order gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, ShapeCastable, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from poise.errors import PoiseError
from poise.golden.integer import MAX_LR_SHIFT
from poise.rtl.clash import clash, unclashed
from poise.rtl.geometry import CoreGeometry
from poise.rtl.implementation import GENERIC, Implementation
from poise.rtl.lfsr import LeapLfsr
from poise.rtl.neuron import (
    NeuronUpdate,
    constant_product,
    input_layout,
    round_shift,
    saturate,
    unsigned_word,
    wire,
)
from poise.rtl.schedule import ScheduleROM
from poise.rtl.sigma_delta import SigmaDeltaEncoder
from poise.rtl.single_port import single_port_banks
from poise.rtl.synapse import (
    SWEEP_LATENCY,
    SynapseLane,
    SynapseOp,
    WeightUpdate,
    eta_shift,
    increment,
    learn_add,
    writes_weight,
)

COUNTER_BITS = 32
CLASH_LAYOUT = data.StructLayout({name: 1 for name in (
    "u", "drive", "summed", "inc_down", "inc_up", "v", "s", "phi", "bias", "s_minus", "pixels", "lists", "input_phi")})
"""The ``clash`` port: per memory marked :data:`~poise.rtl.clash.UNCLASHED`, whether a read whose word was used
has met a write to its address since reset (which simulation must never show; see :mod:`poise.rtl.clash`)."""


def command_layout(geometry: CoreGeometry) -> data.StructLayout:
    """An image request: ``train`` runs the nudged phase towards ``label`` with β of sign ``beta_negative``
    after the free phase; ``learn`` lets it change the weights (without it, the run is
    :meth:`~poise.golden.integer.IntegerSpikingModel.trace` with a label), with every learning rate scaled
    by 2^-``lr_shift`` (the golden model's ``lr_shift``)."""
    return data.StructLayout({"train": 1, "learn": 1, "label": range(geometry.sizes[-1]), "beta_negative": 1,
                              "lr_shift": range(MAX_LR_SHIFT + 1)})


def result_layout(geometry: CoreGeometry) -> data.StructLayout:
    """An image's result: the free phase's ``prediction`` (argmax of the output s, first maximum), the output
    states ``outputs`` (raw, state format), and the free phase's ``spikes`` and ``synops`` (as
    :meth:`~poise.golden.spiking.SpikingEqProp.count_cost` counts them), the image's ``cycles``, and
    ``synapse_cycles``, the cycles the synapse lanes were busy (accumulate, drive and sweep passes)."""
    return data.StructLayout({
        "prediction": range(geometry.sizes[-1]),
        "outputs": data.ArrayLayout(unsigned_word(geometry.fixed.state), geometry.sizes[-1]),
        "spikes": COUNTER_BITS, "synops": COUNTER_BITS, "cycles": COUNTER_BITS, "synapse_cycles": COUNTER_BITS,
    })


def parameter_request_layout(geometry: CoreGeometry) -> data.StructLayout:
    """A host access to one parameter: weight (``row``, ``col``) of W_``layer``, or with ``bias`` the bias of
    neuron ``col`` of layer ``layer`` + 1. ``write`` stores ``value`` (raw); the response returns the value.
    The fields are one bit wider than valid values need, so that out-of-range requests can be made and refused."""
    fixed = geometry.fixed
    return data.StructLayout({
        "write": 1, "bias": 1, "layer": range(geometry.matrices),
        "row": range(max(geometry.layers) + 1), "col": range(max(geometry.layers) + 1),
        "value": signed(max(fixed.weight.width, fixed.bias.width) + 1),
    })


def parameter_response_layout(geometry: CoreGeometry) -> data.StructLayout:
    """The answer to a parameter access: the ``value`` (raw), or ``error`` set (and nothing written) when the
    layer, row or column lies outside the network or a written value outside its format."""
    return data.StructLayout({"value": parameter_request_layout(geometry).members["value"], "error": 1})


def trace_layout(geometry: CoreGeometry) -> data.StructLayout:
    """One neuron update, as :class:`~poise.golden.integer.Trace` records it: the 0-based ``step`` of the
    image, the global ``neuron`` index, ``u`` (saturated), ``v``, ``p``, the new ``s``, ``rho_prev`` (s of the
    step before), ``a``, the new ``phi`` and the spike ``q``."""
    fixed, fields = geometry.fixed, input_layout(geometry.fixed).members
    steps = geometry.spec.steps_free + geometry.spec.steps_nudge
    return data.StructLayout({
        "step": range(steps), "neuron": range(geometry.neurons), "u": fields["u"], "v": fields["v"],
        "p": signed(fixed.pressure.width), "s": fields["s"], "rho_prev": fields["s"],
        "a": signed(fixed.encoder.width), "phi": fields["phi"], "q": 1,
    })


@dataclass(frozen=True)
class _Segment:
    """One walk of the accumulate engine over a spike (or pixel) list: ``source`` is ``"input"``,
    ``"pixels"`` (the stored image, its zero pixels skipped) or a span index; every entry is a row
    (``kind = "row"``) or a column of W_``layer``."""

    source: str | int
    layer: int
    kind: str
    op: str  # "acc", "drive" or "sweep"


class NetworkCore(wiring.Component):
    """The spiking network of ``geometry.spec`` in fixed point, bit-exact with
    :class:`~poise.golden.integer.IntegerSpikingModel` (``infer``, ``trace`` and ``train_image``).

    Protocol: a ``command`` is taken when the core is idle, then the image's pixels on ``pixels`` (one byte
    each, in order); one ``result`` follows. Between images, ``parameter_request`` reads or writes one
    weight or bias (one ``parameter_response`` each). ``trace`` (``valid`` and ``payload``, no ``ready``: it
    never waits) reports every neuron update as it happens; a testbench samples it every cycle, and it costs
    nothing when left unconnected.

    Parameters
    ----------
    geometry : CoreGeometry
        The network, its fixed-point spec and the number of synapse lanes P.
    weights, biases : list of numpy arrays
        Raw initial parameters (the formats of ``geometry.fixed``): the memories' contents when the FPGA is
        configured. ``rst`` clears the registers and the LFSR, not the memories: learned and written
        parameters survive it.
    implementation : Implementation
        Which memories synthesis keeps out of block RAM and how deep the neuron pipeline is (the behaviour
        is the same either way).
    """

    def __init__(self, geometry: CoreGeometry, weights: list[np.ndarray], biases: list[np.ndarray],
                 implementation: Implementation = GENERIC) -> None:
        spec, fixed = geometry.spec, geometry.fixed
        if spec.spiking is None or (spec.spiking.predictive is None) != (fixed.lambda_rom is None):
            raise PoiseError("the core needs a spiking spec whose predictive coding matches the fixed-point ROMs")
        if fixed.pixel.width - 1 != 8:
            raise PoiseError(f"the core takes one byte per pixel; the spec's pixel format is {fixed.pixel}")
        steps = spec.steps_free + spec.steps_nudge
        last_t = steps if spec.spiking.continue_time else max(spec.steps_free, spec.steps_nudge)
        if last_t > fixed.steps:
            raise PoiseError(f"the run reaches t = {last_t} but the ROMs hold {fixed.steps} steps")
        if len(weights) != geometry.matrices or len(biases) != geometry.matrices:
            raise PoiseError(f"the network has {geometry.matrices} weight matrices and bias vectors, not "
                             f"{len(weights)} and {len(biases)}")
        if implementation.single_port_w0 and geometry.spike_input:
            raise PoiseError("a single-ported W₀ needs current-mode input: in spike mode the accumulate pass reads "
                             "and learns W₀ in the same cycles")
        self.geometry, self.implementation = geometry, implementation
        self.weight_images = [geometry.weight_banks(layer, w) for layer, w in enumerate(weights)]
        self.bias_image = np.concatenate([np.asarray(b, np.int64) for b in biases])
        for name, values, fmt in (("weights", np.concatenate([w.ravel() for w in weights]), fixed.weight),
                                  ("biases", self.bias_image, fixed.bias)):
            if not fmt.contains(values).all():
                raise PoiseError(f"{name} lie outside {fmt}")
        super().__init__({
            "command": In(stream.Signature(command_layout(geometry))),
            "pixels": In(stream.Signature(unsigned_word(fixed.pixel))),
            "result": Out(stream.Signature(result_layout(geometry))),
            "parameter_request": In(stream.Signature(parameter_request_layout(geometry))),
            "parameter_response": Out(stream.Signature(parameter_response_layout(geometry))),
            "trace": Out(wiring.Signature({"valid": Out(1), "payload": Out(trace_layout(geometry))})),
            "clash": Out(CLASH_LAYOUT),
        })

    # -- static structure -----------------------------------------------------------------------------------
    def segments(self) -> tuple[list[_Segment], list[_Segment], list[_Segment]]:
        """The accumulate, drive and sweep passes as segment lists, in the order of the golden model's reads
        and random draws: W_l for l = 0, 1, …, rows before columns."""
        geometry = self.geometry
        accumulate = [_Segment("input", 0, "row", "acc")] if geometry.spike_input else []
        for layer in range(1, geometry.matrices):
            accumulate += [_Segment(layer - 1, layer, "row", "acc"), _Segment(layer, layer, "col", "acc")]
        drive = [] if geometry.spike_input else [_Segment("pixels", 0, "row", "drive")]
        sweep = [] if geometry.spike_input else [_Segment("pixels", 0, "row", "sweep")]
        return accumulate, drive, sweep

    # -- gateware ---------------------------------------------------------------------------------------------
    def elaborate(self, platform: object) -> Module:
        geometry, spec, fixed = self.geometry, self.geometry.spec, self.geometry.fixed
        m = Module()
        P, LP = geometry.lanes, geometry.lanes.bit_length() - 1
        sizes, spans, L = geometry.sizes, geometry.span_start, len(geometry.sizes)
        n_in, n_out, N = geometry.layers[0], sizes[-1], geometry.neurons
        F, guard = fixed.state.frac, fixed.guard
        shift = F - fixed.weight.frac
        steps_free, steps_total = spec.steps_free, spec.steps_free + spec.steps_nudge
        spike_input = geometry.spike_input
        learning = fixed.eta is not None
        stochastic = fixed.learn_rounding == "stochastic"
        state_shape = unsigned_word(fixed.state)
        pixel_shape = unsigned_word(fixed.pixel)
        accumulate_segments, drive_segments, sweep_segments = self.segments()
        segments = accumulate_segments + drive_segments + sweep_segments

        def rs(value: Value, amount: int) -> Value:
            return round_shift(value, amount, fixed.rounding)

        def neuron_lane(local_index: Value) -> Value:
            """The neuron bank (and lane) of the neuron at ``local_index`` in its layer."""
            return local_index[:LP] if LP else Const(0)

        def memory(name: str, shape: Shape | ShapeCastable, depth: int, init: object = ()) -> Memory:
            mem = Memory(shape=shape, depth=max(depth, 1), init=[int(value) for value in init],
                         attrs=self.implementation.memory_attrs(shape, max(depth, 1)))
            m.submodules[name] = mem
            return mem

        # -- submodules -----------------------------------------------------------------------------------
        m.submodules.neuron = neuron = NeuronUpdate(fixed, shallow=self.implementation.shallow_neuron,
                                                    steady_schedule=True)  # one step's ROM words per pass
        m.submodules.schedule = schedule = ScheduleROM(fixed, self.implementation)
        m.submodules.lfsr = lfsr = LeapLfsr(max(guard, 1), P)
        if spike_input:
            m.submodules.input_encoder = input_encoder = SigmaDeltaEncoder(fixed.encoder)

        # -- memories ---------------------------------------------------------------------------------------
        weight_shape = signed(fixed.weight.width)
        weight_banks = []  # [layer][bank] -> (read port, write port)
        for layer, image in enumerate(self.weight_images):
            if layer == 0 and self.implementation.single_port_w0:
                # A sweep word is issued three times and written once, in the cycle of the next word's last
                # read: that read is skipped and the word of the one before it (the same word) is kept.
                weight_banks.append(single_port_banks(m, "w0", weight_shape, image))
                continue
            banks = []
            for bank in range(P):
                mem = memory(f"w{layer}_bank{bank}", weight_shape, geometry.bank_depth(layer), image[bank])
                write = mem.write_port()
                banks.append((mem.read_port(transparent_for=(write,)), write))
            weight_banks.append(banks)

        # The engine reads a target word two cycles after an earlier write of it (one cycle after is
        # forwarded) only when a layer it adds into has at most two words: then u and the drive stay transparent.
        target_words = [geometry.words(seg.layer) if seg.kind == "row" else -(-geometry.layers[seg.layer] // P)
                        for seg in accumulate_segments + drive_segments]
        engine_rereads = min(target_words, default=3) <= 2

        def neuron_banks(name: str, shape: Shape, depth: int, transparent: bool = False) -> list[tuple]:
            banks = []
            for bank in range(P):
                mem = memory(f"{name}_bank{bank}" if transparent else unclashed(f"{name}_bank{bank}"), shape, depth)
                write = mem.write_port()
                banks.append((mem.read_port(transparent_for=(write,) if transparent else ()), write))
            return banks

        u_shape = signed(geometry.accumulator_bits)
        increment_shape = signed(fixed.increment.width)
        drive_shape = signed(geometry.drive_bits)
        delta_shape = signed(geometry.summed_bits)
        first_depth = -(-sizes[0] // P)
        u_banks = neuron_banks("u", u_shape, geometry.neuron_depth, engine_rereads)
        inc_down = neuron_banks("inc_down", increment_shape, geometry.neuron_depth) if learning else None
        inc_up = neuron_banks("inc_up", increment_shape, geometry.neuron_depth) if learning and L > 1 else None
        drive_banks = None if spike_input else neuron_banks("drive", drive_shape, first_depth, engine_rereads)
        summed_banks = None if spike_input or not learning else neuron_banks("summed", delta_shape, first_depth)

        def neuron_memory(name: str, shape: Shape, init: object = ()) -> tuple:
            mem = memory(unclashed(name), shape, N, init)
            return mem.read_port(), mem.write_port()

        v_mem = neuron_memory("v", signed(fixed.decoded.width))
        s_mem = neuron_memory("s", state_shape)
        phi_mem = neuron_memory("phi", signed(fixed.encoder.width))
        bias_mem = neuron_memory("bias", signed(fixed.bias.width), self.bias_image)
        s_minus_mem = neuron_memory("s_minus", state_shape) if learning else None

        pixel_mem = memory(unclashed("pixels"), pixel_shape, n_in)
        pixel_write, pixel_read = pixel_mem.write_port(), pixel_mem.read_port()
        lists: dict = {}  # source -> (read port, write port, count register, capacity)
        list_sources = [*range(L)] + (["input"] if spike_input else [])
        for source in list_sources:
            capacity = sizes[source] if isinstance(source, int) else n_in
            shape = unsigned(max(capacity - 1, 1).bit_length())
            # The input list has two halves: the encode pass of step t fills one while the accumulate pass of
            # step t reads the other, filled at step t − 1.
            mem = memory(unclashed(f"list_{source}"), shape, 2 * capacity if source == "input" else capacity)
            lists[source] = (mem.read_port(), mem.write_port(),
                             Signal(range(capacity + 1), name=f"count_{source}"), capacity)
        if spike_input:
            input_phi = memory(unclashed("input_phi"), signed(fixed.encoder.width), n_in)
            input_phi_write, input_phi_read = input_phi.write_port(), input_phi.read_port()

        # -- image registers and counters -----------------------------------------------------------------
        train = Signal(name="train")
        label = Signal(range(n_out), name="label")
        beta_negative = Signal(name="beta_negative")
        step = Signal(range(steps_total + 1), name="step")  # 0-based step of the image
        t = Signal(range(fixed.steps + 2), name="t")
        nudged = Signal(name="nudged")
        learn_enable = Signal(name="learn_enable")
        learn = Signal(name="learn")  # a learning image's nudged phase
        lr_shift = Signal(range(MAX_LR_SHIFT + 1), name="lr_shift")
        spikes, synops, cycles, synapse_cycles = (
            Signal(COUNTER_BITS, name=name) for name in ("spikes", "synops", "cycles", "synapse_cycles"))
        outputs = Signal(data.ArrayLayout(state_shape, n_out), name="outputs")
        prediction = Signal(range(n_out), name="prediction")
        best = Signal(state_shape, name="best")
        busy = Signal(name="busy")
        m.d.comb += learn.eq(learn_enable & nudged)
        with m.If(busy & ~self.result.valid):
            m.d.sync += cycles.eq(cycles + 1)

        # ROM words of step t: requested when a step starts, held while o.ready is low.
        rom_load = Signal(name="rom_load")
        m.d.comb += [schedule.i.valid.eq(rom_load), schedule.o.ready.eq(rom_load), schedule.i.payload.t.eq(t)]
        rom = schedule.o.payload

        # LFSR: the engine's writes or one bias write per cycle draw words, in the golden model's order.
        lfsr_advance = Signal(range(P + 1), name="lfsr_advance")
        m.d.comb += lfsr.advance.eq(Mux(stochastic, lfsr_advance, 0))
        noise = [lfsr.words[r] if stochastic else Const((1 << guard) >> 1, max(guard, 1)) for r in range(P)]


        # -- the accumulate engine: segments of a pass, P lanes ----------------------------------------------
        segment = Signal(range(max(len(segments), 1)), name="segment")
        segment_last = Signal(range(max(len(segments), 1)), name="segment_last")
        longest_list = max(n_in, *sizes)
        position = Signal(range(longest_list + 1), name="position")
        position_next = Signal(range(longest_list + 2), name="position_next")
        word = Signal(range(max(geometry.layers) + 1), name="word")
        starting = Signal(name="starting")
        engine_run = Signal(name="engine_run")
        with m.If(engine_run):
            m.d.sync += synapse_cycles.eq(synapse_cycles + 1)
        engine_done = Signal(name="engine_done")
        m.d.comb += position_next.eq(position)

        issue = Signal(name="issue")
        issue_final = Signal(name="issue_final")  # the last cycle of an issue (a sweep word is issued 3 times)
        sweep_hold = Signal(range(SWEEP_LATENCY + 1), name="sweep_hold")
        issue_addr = Signal(data.ArrayLayout(range(max(geometry.bank_depth(i) for i in range(L)) + 1), P))
        lane_index = unsigned(max(LP, 1))
        issue_rot = Signal(lane_index, name="issue_rot")
        issue_target = Signal(range(geometry.neuron_depth + 1), name="issue_target")
        issue_count = Signal(range(P + 1), name="issue_count")
        issue_layer = Signal(range(L), name="issue_layer")
        issue_kind_col = Signal(name="issue_kind_col")
        issue_op = Signal(SynapseOp, name="issue_op")
        issue_pixel = Signal(pixel_shape, name="issue_pixel")
        ops = {"acc": SynapseOp.ACCUMULATE, "drive": SynapseOp.DRIVE, "sweep": SynapseOp.SWEEP}

        for source in list_sources:
            m.d.comb += lists[source][0].addr.eq(position_next)
        if spike_input:  # the half the encode pass filled at the step before
            m.d.comb += lists["input"][0].addr.eq(position_next + Mux(step[0], 0, n_in))
        else:  # the drive and the sweep walk the stored image
            m.d.comb += pixel_read.addr.eq(position_next)
        with m.If(engine_run), m.Switch(segment):
            for index, seg in enumerate(segments):
                with m.Case(index):
                    if seg.source == "pixels":  # every pixel: its index is the position
                        read, count, entry = pixel_read, Const(n_in), position
                    else:
                        read, _, count, _ = lists[seg.source]
                        entry = read.data
                    layer = seg.layer
                    if seg.kind == "row":
                        words, target_span = geometry.words(layer), layer
                    else:
                        words, target_span = -(-geometry.layers[layer] // P), layer - 1
                    n_target = geometry.sizes[target_span]
                    last_word = word == words - 1
                    with m.If(starting):
                        m.d.comb += position_next.eq(0)
                        with m.If(count == 0):
                            with m.If(segment == segment_last):
                                m.d.comb += engine_done.eq(1)
                            with m.Else():
                                m.d.sync += segment.eq(segment + 1)
                        with m.Else():
                            m.d.sync += starting.eq(0)
                    with m.Else():
                        # A sweep word is issued for SWEEP_LATENCY + 1 cycles (its lanes' products are
                        # registered); only the last one writes and moves on.
                        # A zero pixel is skipped in as many cycles as a word takes: the single-ported W₀
                        # (rtl/single_port.py) needs the sweep's writes in step with its reads.
                        advance = sweep_hold == SWEEP_LATENCY if seg.op == "sweep" else Const(1)
                        if seg.op == "sweep":
                            m.d.sync += sweep_hold.eq(Mux(advance, 0, sweep_hold + 1))
                        skip = read.data == 0 if seg.source == "pixels" else Const(0)
                        m.d.comb += [
                            issue.eq(~skip), issue_final.eq(advance), issue_layer.eq(layer),
                            issue_kind_col.eq(seg.kind == "col"),
                            issue_op.eq(ops[seg.op]),
                            issue_target.eq(geometry.neuron_base[target_span] + word),
                            issue_count.eq(Mux(n_target - (word << LP) >= P, P, n_target - (word << LP))),
                        ]
                        if seg.source == "pixels":
                            m.d.comb += issue_pixel.eq(read.data)
                        if seg.kind == "row":
                            m.d.comb += issue_rot.eq(entry[:LP] if geometry.skewed(layer) and LP else 0)
                            row_word = wire(m, constant_product(entry, words) + word, f"row_word_{index}")
                            for r in range(P):
                                m.d.comb += issue_addr[r].eq(row_word)
                        else:
                            m.d.comb += issue_rot.eq(entry[:LP] if LP else 0)
                            for r in range(P):
                                m.d.comb += issue_addr[r].eq(constant_product((word << LP) + r, geometry.words(layer))
                                                             + (entry >> LP))
                        with m.If(advance & (last_word | skip)):
                            m.d.sync += word.eq(0)
                            with m.If(position + 1 == count):
                                m.d.sync += starting.eq(1)
                                with m.If(segment == segment_last):
                                    m.d.comb += engine_done.eq(1)
                                with m.Else():
                                    m.d.sync += segment.eq(segment + 1)
                            with m.Else():
                                m.d.comb += position_next.eq(position + 1)
                        with m.Elif(advance):
                            m.d.sync += word.eq(word + 1)
        m.d.sync += position.eq(position_next)

        def lane_of(bank: int, rotation: Value) -> Value:
            """The lane whose weight sits in ``bank`` under ``rotation``."""
            return (bank - rotation)[:LP] if LP else Const(0)

        # The issue is registered before it reaches the memories: the row address (a list entry times the
        # words per row) and each bank's lane pick are computed here, so only a register drives the address
        # pins of a weight bank spread over many block RAMs.
        issue_layout = data.StructLayout({
            "valid": 1, "rot": issue_rot.shape(), "target": issue_target.shape(),
            "count": issue_count.shape(), "layer": issue_layer.shape(), "col": 1, "op": SynapseOp,
            "pixel": issue_pixel.shape(), "final": 1})
        issued = Signal(issue_layout, name="issued")
        issued_bank_addr = Signal(issue_addr.shape(), name="issued_bank_addr")  # by bank
        m.d.sync += [
            issued.valid.eq(issue), issued.final.eq(issue_final),
            issued.rot.eq(issue_rot), issued.target.eq(issue_target),
            issued.count.eq(issue_count), issued.layer.eq(issue_layer), issued.col.eq(issue_kind_col),
            issued.op.eq(issue_op), issued.pixel.eq(issue_pixel),
            *(issued_bank_addr[bank].eq(Array(issue_addr)[lane_of(bank, issue_rot)]) for bank in range(P)),
        ]

        # Stage A of the engine: the memories' words are back. They are rotated and registered: the weights to
        # the lanes (u and the drive belong to the target neuron), the increments, random words and write
        # addresses to the weight banks (a weight learns in its own bank). Stage B then only adds and writes,
        # with no memory output and no lane-bank multiplexer in its paths.
        held = Signal(data.StructLayout({**issue_layout.members, "bank_addr": issue_addr.shape(), "learn": 1}),
                      name="held")
        m.d.sync += [*(getattr(held, name).eq(getattr(issued, name)) for name in issue_layout.members),
                     held.bank_addr.eq(issued_bank_addr), held.learn.eq(learn)]

        def bank_of(lane: int, rotation: Value) -> Value:
            return (lane + rotation)[:LP] if LP else Const(0)

        def by_lane(shape: Shape) -> data.ArrayLayout:
            return data.ArrayLayout(shape, P)

        staged = Signal(data.StructLayout({
            "valid": 1, "final": 1, "target": issue_target.shape(), "layer": issue_layer.shape(), "op": SynapseOp,
            "pixel": issue_pixel.shape(), "learn": 1,
            # by lane: whether it holds a synapse, its weight, its target's words; whether the item before
            # wrote that target word (then its value is forwarded: the memory read missed the write)
            "lanes": P, "weight": by_lane(weight_shape), "u": by_lane(u_shape), "drive": by_lane(drive_shape),
            "summed": by_lane(delta_shape), "u_forward": P, "drive_forward": P,
            # by bank: the stored weight, its increment, its random word, its address and whether it is written
            "bank_weight": by_lane(weight_shape), "bank_increment": by_lane(increment_shape),
            "bank_noise": by_lane(unsigned(max(guard, 1))), "bank_addr": issue_addr.shape(), "bank_write": P,
        }), name="staged")
        m.d.sync += [
            staged.valid.eq(held.valid), staged.final.eq(held.final), staged.target.eq(held.target),
            staged.layer.eq(held.layer), staged.op.eq(held.op), staged.pixel.eq(held.pixel),
            staged.learn.eq(held.learn),
        ]
        held_lanes = Signal(P, name="held_lanes")
        for r in range(P):
            m.d.comb += held_lanes[r].eq(held.valid & (r < held.count))
        # The random words are drawn here, in stage A, in the golden model's order (one per written weight).
        m.d.comb += lfsr_advance.eq(Mux(held.valid & held.final & writes_weight(held.op, held.learn, fixed),
                                        held.count, 0))
        increments = [Mux(held.col, inc_up[r][0].data, inc_down[r][0].data) if inc_up else inc_down[r][0].data
                      for r in range(P)] if learning else None
        for r in range(P):
            rewrites = staged.valid & staged.lanes[r] & (staged.target == held.target)
            m.d.sync += [
                staged.lanes[r].eq(held_lanes[r]), staged.u[r].eq(u_banks[r][0].data),
                staged.u_forward[r].eq(rewrites & (staged.op == SynapseOp.ACCUMULATE)),
            ]
            with m.Switch(held.layer):
                for layer in range(L):
                    with m.Case(layer):
                        data_by_bank = Array(port.data for port, _ in weight_banks[layer])
                        m.d.sync += [staged.weight[r].eq(data_by_bank[bank_of(r, held.rot)]),
                                     staged.bank_weight[r].eq(weight_banks[layer][r][0].data)]
            if drive_banks is not None:
                m.d.sync += [staged.drive[r].eq(drive_banks[r][0].data),
                             staged.drive_forward[r].eq(rewrites & (staged.op == SynapseOp.DRIVE))]
            if summed_banks is not None:
                m.d.sync += staged.summed[r].eq(summed_banks[r][0].data)
            lane = lane_of(r, held.rot)  # here r is a bank
            m.d.sync += [staged.bank_addr[r].eq(held.bank_addr[r]),
                         staged.bank_write[r].eq(held_lanes.bit_select(lane, 1)),
                         staged.bank_noise[r].eq(Array(noise)[lane])]
            if learning:
                m.d.sync += staged.bank_increment[r].eq(Array(increments)[lane])

        # Stage B: add and write. u and the drive in the lanes' neuron banks, the weights in their own banks.
        lanes = []
        for r in range(P):
            m.submodules[f"lane{r}"] = lane = SynapseLane(geometry, self.implementation.logic_products)
            lanes.append(lane)
            u_written = Signal(u_shape, name=f"u_written{r}")
            drive_written = Signal(drive_shape, name=f"drive_written{r}")
            m.d.sync += [u_written.eq(lane.u_next), drive_written.eq(lane.drive_next)]
            m.d.comb += [
                lane.op.eq(staged.op), lane.pixel.eq(staged.pixel), lane.lr_shift.eq(lr_shift),
                lane.weight.eq(staged.weight[r]), lane.summed.eq(staged.summed[r]),
                lane.u.eq(Mux(staged.u_forward[r], u_written, staged.u[r])),
                lane.drive.eq(Mux(staged.drive_forward[r], drive_written, staged.drive[r])),
            ]
            u_write = u_banks[r][1]
            m.d.comb += [u_write.addr.eq(staged.target), u_write.data.eq(lane.u_next)]
            with m.If(staged.valid & staged.lanes[r] & lane.write_u):
                m.d.comb += u_write.en.eq(1)
            if drive_banks is not None:
                d_write = drive_banks[r][1]
                m.d.comb += [d_write.addr.eq(staged.target), d_write.data.eq(lane.drive_next)]
                with m.If(staged.valid & staged.lanes[r] & lane.write_drive):
                    m.d.comb += d_write.en.eq(1)
        if learning:
            # The sweep walks rows of W₀, which is not skewed: bank b holds lane b's weight.
            assert not geometry.skewed(0)
            writes_weights = staged.valid & staged.final & writes_weight(staged.op, staged.learn, fixed)
            for bank in range(P):
                m.submodules[f"learn{bank}"] = update = WeightUpdate(fixed)
                m.d.comb += [
                    update.weight.eq(staged.bank_weight[bank]), update.noise.eq(staged.bank_noise[bank]),
                    update.increment.eq(Mux(staged.op == SynapseOp.SWEEP, lanes[bank].swept_increment,
                                            staged.bank_increment[bank])),
                ]
                for layer in range(L):
                    _, write = weight_banks[layer][bank]
                    written = Signal(data.StructLayout({"addr": write.addr.shape(), "data": weight_shape, "en": 1}),
                                     name=f"w{layer}_written{bank}")
                    m.d.comb += [written.addr.eq(staged.bank_addr[bank]), written.data.eq(update.weight_next),
                                 written.en.eq(writes_weights & (staged.layer == layer) & staged.bank_write[bank])]
                    if layer == 0:
                        # W₀'s banks are the largest (spread over many block RAMs): their writes are registered
                        # once more. W₀ is read by row only, each row once per pass, so no read of the pass
                        # needs a W₀ word a cycle after its write; the drain covers the next pass.
                        registered = Signal.like(written, name=f"w0_write{bank}")
                        m.d.sync += registered.eq(written)
                        written = registered
                    m.d.comb += [write.addr.eq(written.addr), write.data.eq(written.data), write.en.eq(written.en)]

        # Engine-side reads: weight banks at the lanes' addresses, neuron banks at the target word.
        # Host access to one parameter (between images): its bank, address, bias index and whether it is
        # refused, registered with the request (so no multiplier sits before a memory address).
        parameter = Signal(parameter_request_layout(geometry), name="parameter")
        host_access = Signal(name="host_access")
        host_addr = Signal(issue_addr.shape().elem_shape, name="host_addr")
        host_bank = Signal(lane_index, name="host_bank")
        bias_index = Signal(range(N + max(geometry.layers) + 1), name="bias_index")
        parameter_error = Signal(name="parameter_error")
        incoming = self.parameter_request.payload
        row_start = Array(constant_product(incoming.row, geometry.words(i)) for i in range(L))[incoming.layer]
        rows_of = Array(Const(n, incoming.row.shape()) for n in geometry.layers[:-1])
        cols_of = Array(Const(n, incoming.col.shape()) for n in geometry.layers[1:])
        value_fits = Mux(incoming.bias,
                         (incoming.value >= fixed.bias.min_raw) & (incoming.value <= fixed.bias.max_raw),
                         (incoming.value >= fixed.weight.min_raw) & (incoming.value <= fixed.weight.max_raw))
        take_parameter = [
            parameter.eq(incoming),
            host_addr.eq(row_start + (incoming.col >> LP)),
            bias_index.eq(Array(Const(start, range(N + 1)) for start in spans)[incoming.layer] + incoming.col),
            parameter_error.eq((incoming.layer >= L) | (incoming.col >= cols_of[incoming.layer])
                               | (~incoming.bias & (incoming.row >= rows_of[incoming.layer]))
                               | (incoming.write & ~value_fits)),
        ]
        if LP:
            skew = Array(Const(int(geometry.skewed(i)), 1) for i in range(L))[incoming.layer]
            take_parameter.append(host_bank.eq((incoming.col + Mux(skew, incoming.row, 0))[:LP]))
        for layer in range(L):
            for bank, (read, _) in enumerate(weight_banks[layer]):
                m.d.comb += read.addr.eq(Mux(host_access, host_addr, issued_bank_addr[bank]))

        # -- the neuron pass ----------------------------------------------------------------------------------
        neuron_run = Signal(name="neuron_run")
        neuron_index = Signal(range(N + 1), name="neuron_index")
        span = Signal(range(L), name="span")
        local = Signal(range(max(sizes) + 1), name="local")
        results = Signal(range(N + 1), name="results")
        neuron_done = Signal(name="neuron_done")
        neuron_addr = Signal(issue_target.shape(), name="neuron_addr")
        base = Array(Const(b, issue_target.shape()) for b in geometry.neuron_base)
        m.d.comb += neuron_addr.eq(base[span] + (local >> LP))

        # Neuron-bank read addresses: the engine's target word, or the neuron pass's word.
        bank_groups = [u_banks, inc_down, inc_up, drive_banks]
        for banks in bank_groups:
            for read, _ in banks or ():
                m.d.comb += read.addr.eq(Mux(neuron_run, neuron_addr, issued.target))
        for read, _ in (v_mem, s_mem, phi_mem):
            m.d.comb += read.addr.eq(neuron_index)
        m.d.comb += bias_mem[0].addr.eq(Mux(host_access, bias_index, neuron_index))

        # N1: the words are back; the request enters the pipeline.
        at_request = Signal(data.StructLayout({
            "neuron": range(N + 1), "span": range(L), "local": local.shape(), "addr": neuron_addr.shape()}),
            name="at_request")
        request_valid = Signal(name="request_valid")
        m.d.sync += [
            request_valid.eq(neuron_run & (neuron_index < N)),
            at_request.neuron.eq(neuron_index), at_request.span.eq(span), at_request.local.eq(local),
            at_request.addr.eq(neuron_addr),
        ]
        request_lane = neuron_lane(at_request.local)
        u_now = Array(read.data for read, _ in u_banks)[request_lane]
        u_saturated = saturate(m, u_now, fixed.accumulator, "u_saturated")
        bias_now = bias_mem[0].data
        offset = Signal(signed(fixed.pressure.width), name="offset")
        m.d.comb += offset.eq(bias_now << shift)
        if drive_banks is not None:
            drive_now = Array(read.data for read, _ in drive_banks)[request_lane]
            drive_rounded = rs(drive_now, fixed.weight.frac + fixed.pixel.frac - F)
            with m.If(at_request.span == 0):
                m.d.comb += offset.eq((bias_now << shift) + drive_rounded)
        request = neuron.i.payload
        m.d.comb += [
            neuron.i.valid.eq(request_valid),
            neuron.o.ready.eq(1),
            request.u.eq(u_saturated), request.v.eq(v_mem[0].data), request.s.eq(s_mem[0].data),
            request.rho_prev.eq(s_mem[0].data), request.phi.eq(phi_mem[0].data), request.offset.eq(offset),
            request.nudge.eq(nudged & (at_request.span == L - 1)),
            request.y.eq(at_request.local == label), request.beta_negative.eq(beta_negative),
            request.epsilon.eq(rom.epsilon),
        ]
        if fixed.lambda_rom is not None:
            m.d.comb += [request.lam.eq(rom.lam), request.inv_lam.eq(rom.inv_lam)]
        # Beside the pipeline travel the neuron's place (its index and bank address follow from it) and, for
        # the trace, u and the old s (a board leaves the trace unconnected and synthesis drops them).
        # (``valid`` only for the clash check.)
        side_layout = data.StructLayout({"valid": 1, "span": range(L), "local": local.shape(), "s_old": state_shape,
                                         "u": signed(fixed.accumulator.width)})
        side = Signal(side_layout, name="side")
        m.d.comb += [side.valid.eq(request_valid), side.span.eq(at_request.span), side.local.eq(at_request.local),
                     side.s_old.eq(s_mem[0].data), side.u.eq(u_saturated)]
        span_start = Array(Const(start, range(N + 1)) for start in spans)

        def place(view: data.View, name: str) -> tuple[Signal, Signal]:
            """The global neuron index and the neuron-bank address of the neuron at ``view``."""
            return (wire(m, span_start[view.span] + view.local, f"{name}_neuron"),
                    wire(m, base[view.span] + (view.local >> LP), f"{name}_addr"))
        # u is consumed: clear it for the next step.
        for r, (_, write) in enumerate(u_banks):
            with m.If(request_valid & (request_lane == r)):
                m.d.comb += [write.addr.eq(at_request.addr), write.data.eq(0), write.en.eq(1)]
        # Bias learning: every bias once per nudged step, in neuron order, with Δw of the step before. Its
        # operands (and its random word, drawn now) are registered and the learned bias written a cycle later:
        # the next read of that bias is a step away.
        if learning:
            bias_learning = Signal(data.StructLayout({
                "en": 1, "addr": bias_mem[1].addr.shape(), "bias": bias_now.shape(),
                "increment": increment_shape, "noise": noise[0].shape()}), name="bias_learning")
            m.d.sync += [
                bias_learning.en.eq(request_valid & learn), bias_learning.addr.eq(at_request.neuron),
                bias_learning.bias.eq(bias_now), bias_learning.noise.eq(noise[0]),
                bias_learning.increment.eq(Array(read.data for read, _ in inc_down)[request_lane]),
            ]
            m.d.comb += [
                bias_mem[1].addr.eq(bias_learning.addr), bias_mem[1].en.eq(bias_learning.en),
                bias_mem[1].data.eq(learn_add(m, bias_learning.bias, bias_learning.increment, bias_learning.noise,
                                              fixed.bias, guard, "bias_learned")),
            ]
            with m.If(request_valid & learn):
                m.d.comb += lfsr_advance.eq(1)

        chain = [side]
        for stage in range(neuron.latency):
            following = Signal(side_layout, name=f"side_{stage + 1}")
            m.d.sync += following.eq(chain[-1])
            chain.append(following)
        delayed = chain[-1]
        result_neuron, result_addr = place(delayed, "result")
        result_lane = neuron_lane(delayed.local)
        # s⁻ and the Δs sum are read two cycles before the result needs them and registered (not carried from
        # the request): the pass writes them for each neuron only at its result, and the next read of that
        # neuron's words is a step away. The register keeps a memory output out of the increments' products.
        late = chain[-3]
        late_neuron, late_addr = place(late, "late")
        if learning:
            s_minus_now = Signal(state_shape, name="s_minus_late")
            m.d.comb += s_minus_mem[0].addr.eq(late_neuron)
            m.d.sync += s_minus_now.eq(s_minus_mem[0].data)
        if summed_banks is not None:
            summed_now = Signal(delta_shape, name="summed_late")
            back_lane = neuron_lane(chain[-2].local)  # the neuron whose words are back
            m.d.sync += summed_now.eq(Array(read.data for read, _ in summed_banks)[back_lane])

        # N6: the result; write back, list the spike, learn.
        result_valid = neuron.o.valid
        out = neuron.o.payload
        m.d.comb += [
            v_mem[1].addr.eq(result_neuron), v_mem[1].data.eq(out.v),
            s_mem[1].addr.eq(result_neuron), s_mem[1].data.eq(out.s),
            phi_mem[1].addr.eq(result_neuron), phi_mem[1].data.eq(out.phi),
        ]
        with m.If(result_valid):
            m.d.comb += [v_mem[1].en.eq(1), s_mem[1].en.eq(1), phi_mem[1].en.eq(1)]
            m.d.sync += results.eq(results + 1)
        fan_out = [(sizes[i + 1] if i + 1 < L else 0) + (sizes[i - 1] if i > 0 else 0) for i in range(L)]
        # Free-phase cost, as the float model counts it: a spike costs its fan-out in SynOps.
        neuron_spike, input_spike = Signal(name="neuron_spike"), Signal(name="input_spike")
        pixel_synops = Signal(name="pixel_synops")
        neuron_synops = Signal(range(max(fan_out) + 1), name="neuron_synops")
        with m.If(busy & (step < steps_free)):
            m.d.sync += [spikes.eq(spikes + neuron_spike + input_spike),
                         synops.eq(synops + neuron_synops + Mux(input_spike | pixel_synops, sizes[0], 0))]
        for index in range(L):
            _, write, count, _ = lists[index]
            m.d.comb += [write.addr.eq(count), write.data.eq(delayed.local)]
            with m.If(result_valid & out.q & (delayed.span == index)):
                m.d.comb += [write.en.eq(1), neuron_spike.eq(1), neuron_synops.eq(fan_out[index])]
                m.d.sync += count.eq(count + 1)
        # The free phase's last step: capture the outputs (and, training, s⁻).
        last_free = Signal(name="last_free")
        m.d.comb += last_free.eq(step == steps_free - 1)
        with m.If(result_valid & last_free & (delayed.span == L - 1)):
            m.d.sync += Array(outputs)[delayed.local].eq(out.s)
            with m.If((delayed.local == 0) | (out.s > best)):
                m.d.sync += [best.eq(out.s), prediction.eq(delayed.local)]
        if learning:
            m.d.comb += [s_minus_mem[1].addr.eq(result_neuron), s_minus_mem[1].data.eq(out.s)]
            with m.If(result_valid & learn_enable & last_free):
                m.d.comb += s_minus_mem[1].en.eq(1)
            reference = Mux(last_free, out.s, s_minus_now)
            difference = wire(m, out.s - reference, "s_difference")
            delta = wire(m, Mux(beta_negative, -difference, difference), "delta_s")
            # The increments Δs·η are registered as they leave the multipliers, then scaled, rounded and
            # written a cycle later (the engine reads them only at the next step).
            increment_write = Signal(data.StructLayout({"valid": 1, "addr": result_addr.shape(), "lane": lane_index}),
                                     name="increment_write")
            m.d.sync += [increment_write.valid.eq(result_valid & learn_enable & (nudged | last_free)),
                         increment_write.addr.eq(result_addr), increment_write.lane.eq(result_lane)]
            for banks, which in ((inc_down, 0), (inc_up, 1)):
                if banks is None:
                    continue
                eta_of_span = [fixed.eta[min(i + which, len(fixed.eta) - 1)] for i in range(L)]
                product = Signal(signed(len(delta) + max(eta.bit_length() for eta in eta_of_span) + 1),
                                 name=f"increment_product_{which}")
                m.d.sync += product.eq(Array(constant_product(delta, eta) for eta in eta_of_span)[delayed.span])
                value = increment(m, product >> lr_shift, eta_shift(fixed), fixed, f"increment_{which}")
                for r, (_, write) in enumerate(banks):
                    m.d.comb += [write.addr.eq(increment_write.addr), write.data.eq(value)]
                    with m.If(increment_write.valid & (increment_write.lane == r)):
                        m.d.comb += write.en.eq(1)
            if summed_banks is not None:
                for r, (read, write) in enumerate(summed_banks):
                    m.d.comb += [read.addr.eq(Mux(neuron_run, late_addr, issued.target)),
                                 write.addr.eq(result_addr), write.data.eq(summed_now + delta)]
                    first_layer = (delayed.span == 0) & (result_lane == r)
                    with m.If(result_valid & learn & (step < steps_total - 1) & first_layer):
                        m.d.comb += write.en.eq(1)
        m.d.comb += [
            self.trace.valid.eq(result_valid),
            self.trace.payload.step.eq(step), self.trace.payload.neuron.eq(result_neuron),
            self.trace.payload.u.eq(delayed.u), self.trace.payload.v.eq(out.v), self.trace.payload.p.eq(out.p),
            self.trace.payload.s.eq(out.s), self.trace.payload.rho_prev.eq(delayed.s_old),
            self.trace.payload.a.eq(out.a), self.trace.payload.phi.eq(out.phi), self.trace.payload.q.eq(out.q),
        ]
        m.d.comb += neuron_done.eq(results == N)

        # -- the encode pass (spike mode): the clamped pixels through step 5 ---------------------------------
        if spike_input:
            encode_run = Signal(name="encode_run")
            pixel_index = Signal(range(n_in + 1), name="pixel_index")
            encoded = Signal(range(n_in + 1), name="encoded")
            m.d.comb += [pixel_read.addr.eq(pixel_index), input_phi_read.addr.eq(pixel_index)]
            loaded = Signal(name="encode_loaded")
            loaded_index = Signal(range(n_in), name="encode_loaded_index")
            m.d.sync += [loaded.eq(encode_run & (pixel_index < n_in)), loaded_index.eq(pixel_index)]
            with m.If(encode_run & (pixel_index < n_in)):
                m.d.sync += pixel_index.eq(pixel_index + 1)
            clamped = Signal(state_shape, name="clamped_s")
            m.d.comb += clamped.eq(pixel_read.data << (F - fixed.pixel.frac))
            a = clamped
            if fixed.inv_lambda_rom is not None:
                first = rs(clamped * rom.inv_lam, fixed.inv_lambda_format.frac)
                a = Mux(step == 0, saturate(m, first, fixed.encoder, "input_a"), clamped)
            m.d.comb += [
                input_encoder.i.valid.eq(loaded), input_encoder.i.payload.a.eq(a),
                input_encoder.i.payload.phi.eq(input_phi_read.data), input_encoder.o.ready.eq(1),
            ]
            encoded_index = Signal(range(n_in), name="encoded_index")
            m.d.sync += encoded_index.eq(loaded_index)
            _, input_write, _, _ = lists["input"]
            input_written = Signal(range(n_in + 1), name="input_written")  # spikes in this step's half
            m.d.comb += [
                input_phi_write.addr.eq(encoded_index), input_phi_write.data.eq(input_encoder.o.payload.phi),
                input_write.addr.eq(input_written + Mux(step[0], n_in, 0)), input_write.data.eq(encoded_index),
            ]
            with m.If(input_encoder.o.valid):
                m.d.comb += input_phi_write.en.eq(1)
                m.d.sync += encoded.eq(encoded + 1)
                with m.If(input_encoder.o.payload.q):
                    m.d.comb += [input_write.en.eq(1), input_spike.eq(1)]
                    m.d.sync += input_written.eq(input_written + 1)

        # -- the sequencer -------------------------------------------------------------------------------------
        load_index = Signal(range(max(n_in, N, geometry.neuron_depth) + 1), name="load_index")
        clear_all = max(N, geometry.neuron_depth)
        m.d.comb += [
            self.result.payload.prediction.eq(prediction), self.result.payload.outputs.eq(outputs),
            self.result.payload.spikes.eq(spikes), self.result.payload.synops.eq(synops),
            self.result.payload.cycles.eq(cycles), self.result.payload.synapse_cycles.eq(synapse_cycles),
        ]

        def clear(address: Value) -> list:
            """Writes of zero to every per-image word at ``address`` (an image starts from rest)."""
            statements = []
            for read_write in (v_mem, s_mem, phi_mem):
                statements += [read_write[1].addr.eq(address), read_write[1].data.eq(0),
                               read_write[1].en.eq(address < N)]
            for banks in (u_banks, drive_banks, summed_banks):
                for _, write in banks or ():
                    depth = write.memory.depth
                    statements += [write.addr.eq(address), write.data.eq(0), write.en.eq(address < depth)]
            return statements

        def start_pass(first: int, last: int) -> list:
            return [segment.eq(first), segment_last.eq(last), starting.eq(1), word.eq(0)]

        n_accumulate, n_drive = len(accumulate_segments), len(drive_segments)

        def engine_pass(state: str, then: str, beside: list = (), when_done: list = ()) -> None:
            """A state that runs the engine over the pass ``start_pass`` set up (``beside`` holding meanwhile),
            then three cycles in which the last issue reaches the memories, stage A and stage B (``when_done``
            on the way), then ``then``, in whose first cycle the last W₀ write lands: every read from there on
            sees the pass's writes."""
            drains = [f"{state}_DRAIN_{k}" for k in range(3)]
            with m.State(state):
                m.d.comb += [engine_run.eq(1), *beside]
                with m.If(engine_done):
                    m.d.sync += when_done
                    m.next = drains[0]
            for drain, following in zip(drains, [*drains[1:], then], strict=True):
                with m.State(drain):
                    m.d.comb += beside
                    m.next = following

        with m.FSM(name="sequencer"):
            with m.State("IDLE"):
                m.d.comb += self.command.ready.eq(1)
                with m.If(self.command.valid):
                    m.d.sync += [
                        train.eq(self.command.payload.train),
                        learn_enable.eq(self.command.payload.train & self.command.payload.learn if learning else 0),
                        label.eq(self.command.payload.label),
                        beta_negative.eq(self.command.payload.beta_negative),
                        lr_shift.eq(self.command.payload.lr_shift),
                        cycles.eq(0), synapse_cycles.eq(0), spikes.eq(0), synops.eq(0), load_index.eq(0),
                        step.eq(0), t.eq(1), nudged.eq(0), busy.eq(1),
                        *(lists[source][2].eq(0) for source in list_sources),
                        *([input_written.eq(0)] if spike_input else []),
                    ]
                    m.next = "LOAD"
                with m.Elif(self.parameter_request.valid):
                    m.next = "PARAMETER"
            with m.State("LOAD"):
                m.d.comb += self.pixels.ready.eq(load_index < n_in)
                m.d.comb += clear(load_index)
                if spike_input:
                    m.d.comb += [input_phi_write.addr.eq(load_index), input_phi_write.data.eq(0),
                                 input_phi_write.en.eq(load_index < n_in)]
                m.d.comb += [pixel_write.addr.eq(load_index), pixel_write.data.eq(self.pixels.payload)]
                with m.If((load_index < n_in) & self.pixels.valid):
                    m.d.comb += pixel_write.en.eq(1)
                    m.d.sync += load_index.eq(load_index + 1)
                    if not spike_input:  # the drive: one multiply-accumulate per hidden neuron and pixel
                        with m.If(self.pixels.payload != 0):
                            m.d.comb += pixel_synops.eq(1)
                with m.If(load_index >= n_in):
                    m.d.sync += load_index.eq(load_index + 1)
                    with m.If(load_index >= max(clear_all - 1, n_in)):
                        if drive_segments:
                            m.d.sync += start_pass(n_accumulate, n_accumulate)
                            m.next = "DRIVE"
                        else:
                            m.next = "STEP"
            if drive_segments:
                engine_pass("DRIVE", then="STEP")
            with m.State("STEP"):
                m.d.comb += rom_load.eq(1)
                if accumulate_segments:
                    m.d.sync += start_pass(0, n_accumulate - 1)
                    m.next = "ACCUMULATE"
                else:
                    m.d.sync += [lists[index][2].eq(0) for index in range(L)]
                    m.next = "NEURONS"
                m.d.sync += [neuron_index.eq(0), span.eq(0), local.eq(0), results.eq(0)]
                if spike_input:
                    m.d.sync += [pixel_index.eq(0), encoded.eq(0)]
            if accumulate_segments:  # the spike lists are read: this step's spikes replace them
                engine_pass("ACCUMULATE", then="NEURONS", beside=[encode_run.eq(1)] if spike_input else [],
                            when_done=[lists[index][2].eq(0) for index in range(L)])
            with m.State("NEURONS"):  # in spike mode the encode pass runs beside the engine, then this
                m.d.comb += neuron_run.eq(1)
                with m.If(neuron_index < N):
                    m.d.sync += neuron_index.eq(neuron_index + 1)
                    with m.If(local == Array(Const(n - 1, local.shape()) for n in sizes)[span]):
                        m.d.sync += [local.eq(0), span.eq(span + 1)]
                    with m.Else():
                        m.d.sync += local.eq(local + 1)
                if spike_input:
                    m.d.comb += encode_run.eq(1)
                    with m.If(neuron_done & (encoded == n_in)):
                        m.next = "STEP_END"
                else:
                    with m.If(neuron_done):
                        m.next = "STEP_END"
            with m.State("STEP_END"):
                m.d.sync += step.eq(step + 1)
                if spike_input:  # the half just filled is the one the next step reads
                    m.d.sync += [lists["input"][2].eq(input_written), input_written.eq(0)]
                restart = not spec.spiking.continue_time
                m.d.sync += t.eq(Mux(last_free, 1, t + 1) if restart else t + 1)
                with m.If(last_free & ~train):
                    m.next = "RESULT"
                with m.Elif(step == steps_total - 1):
                    if sweep_segments and learning:
                        with m.If(learn_enable):
                            m.d.sync += start_pass(n_accumulate + n_drive, n_accumulate + n_drive)
                            m.next = "SWEEP"
                        with m.Else():
                            m.next = "RESULT"
                    else:
                        m.next = "RESULT"
                with m.Else():
                    with m.If(last_free):
                        m.d.sync += nudged.eq(1)
                    m.next = "STEP"
            if sweep_segments and learning:
                engine_pass("SWEEP", then="RESULT")
            with m.State("RESULT"):
                m.d.sync += busy.eq(0)
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    m.next = "IDLE"
            with m.State("PARAMETER"):
                m.d.comb += self.parameter_request.ready.eq(1)
                m.d.sync += take_parameter
                m.next = "PARAMETER_ACCESS"
            with m.State("PARAMETER_ACCESS"):  # the write, or the read's address
                m.d.comb += host_access.eq(1)
                write_ok = parameter.write & ~parameter_error
                with m.If(write_ok & parameter.bias):
                    m.d.comb += [bias_mem[1].addr.eq(bias_index), bias_mem[1].data.eq(parameter.value),
                                 bias_mem[1].en.eq(1)]
                for layer in range(L):
                    for bank, (_, write) in enumerate(weight_banks[layer]):
                        with m.If(write_ok & ~parameter.bias & (parameter.layer == layer) & (host_bank == bank)):
                            m.d.comb += [write.addr.eq(host_addr), write.data.eq(parameter.value), write.en.eq(1)]
                m.next = "PARAMETER_READ"
            # The value is registered before it leaves: a weight bank's output multiplexer (over 48 block RAMs
            # on the ULX3S) is a long path already.
            read_back = Signal(self.parameter_response.payload.value.shape(), name="read_back")
            with m.State("PARAMETER_READ"):  # the words at the host's address are back
                m.d.comb += host_access.eq(1)
                m.d.sync += read_back.eq(Mux(parameter_error, 0, bias_mem[0].data))
                with m.If(parameter.write & ~parameter_error):  # what the write stored
                    m.d.sync += read_back.eq(parameter.value)
                with m.Elif(~parameter.bias & ~parameter_error), m.Switch(parameter.layer):
                    for layer in range(L):
                        with m.Case(layer):
                            m.d.sync += read_back.eq(Array(port.data for port, _ in weight_banks[layer])[host_bank])
                m.next = "PARAMETER_RESPONSE"
            with m.State("PARAMETER_RESPONSE"):
                m.d.comb += [self.parameter_response.valid.eq(1), self.parameter_response.payload.value.eq(read_back),
                             self.parameter_response.payload.error.eq(parameter_error)]
                with m.If(self.parameter_response.ready):
                    m.next = "IDLE"

        # -- the clash check (simulation): no used read of an unclashed memory meets a write to its address --
        pass_read = neuron_run & (neuron_index < N)  # the neuron pass reads this neuron's words
        engine_read = ~neuron_run & issued.valid  # the engine reads its target's words (every bank)
        reading_lane, late_lane = neuron_lane(local), neuron_lane(late.local)
        clashes: dict[str, list[Value]] = {name: [] for name in CLASH_LAYOUT.members}
        watched_banks = {"u": (u_banks, not engine_rereads), "drive": (drive_banks, not engine_rereads),
                         "inc_down": (inc_down, True), "inc_up": (inc_up, True)}
        for name, (banks, watched) in watched_banks.items():
            for r, (read, write) in enumerate(banks if watched and banks else ()):
                clashes[name].append(clash(read.addr, write, (pass_read & (reading_lane == r)) | engine_read))
        for r, (read, write) in enumerate(summed_banks or ()):
            clashes["summed"].append(
                clash(read.addr, write, Mux(neuron_run, late.valid & (late_lane == r), issued.valid)))
        for name, (read, write) in (("v", v_mem), ("s", s_mem), ("phi", phi_mem)):
            clashes[name].append(clash(read.addr, write, pass_read))
        clashes["bias"].append(clash(bias_mem[0].addr, bias_mem[1], pass_read | (host_access & ~parameter.write)))
        if learning:
            clashes["s_minus"].append(clash(s_minus_mem[0].addr, s_minus_mem[1], late.valid))
        clashes["pixels"].append(clash(pixel_read.addr, pixel_write, encode_run if spike_input else engine_run))
        for read, write, _, _ in lists.values():
            clashes["lists"].append(clash(read.addr, write, engine_run))
        if spike_input:
            clashes["input_phi"].append(clash(input_phi_read.addr, input_phi_write, encode_run & (pixel_index < n_in)))
        clashed = Signal(CLASH_LAYOUT, name="clashed")
        for name, found in clashes.items():
            if found:
                with m.If(Cat(*found).any()):
                    m.d.sync += getattr(clashed, name).eq(1)
        m.d.comb += self.clash.eq(clashed)
        return m
