"""The integer golden model of the spiking network, [000] Eq. 14: exactly the arithmetic the RTL performs.

Every value is a raw integer of a format of the :class:`~poise.golden.fixed.FixedPointSpec`, F is the state's
fraction bits and ``rs(x, k)`` is :func:`~poise.golden.fixed.round_shift` with the spec's rounding rule. One
step t of every non-input neuron, in this order (all from the spikes q of step t − 1, synchronously):

1. ``u = Σ wᵢⱼ qᵢ`` over the spiking neighbours (weight LSBs, exact); spike mode adds the input spikes;
2. ``v ← sat(v + rs((u·2^(F−f_w) − v)·λ_t, K_λ))``, [000] Eq. 13 (``v = u·2^(F−f_w)`` without predictive coding);
3. ``p = sat(v + offset [+ ±rs((y − s)·2|β|, K_β)])``; offset = b·2^(F−f_w), plus in current mode the drive
   ``rs(Σ wᵢⱼ·pixelᵢ, f_w + 8 − F)`` formed once per image; the nudge only on outputs in a nudged phase;
4. ``s ← clip(s + rs((p − s)·ε_t, K_ε), 0, 1)``, [000] Eq. 14 (ρ'(s) = 1 on the clipped state);
5. ``a = sat(ρ_prev + rs((s − ρ_prev)·(1/λ)_t, K_1/λ))``, [000] Eq. 12 rewritten with the 1/λ ROM
   (``a = s`` without predictive coding), then ``q, φ = sigma_delta_fixed(a, φ)`` ([000] Eq. 11), ``ρ_prev = s``.

Training (:meth:`IntegerSpikingModel.train_image`, batch 1) applies the spike-triggered rule as
read-modify-writes of the weights read in step 1 of the nudged phase, with LFSR stochastic rounding
(docs/FIXED_POINT.md "On-chip learning").

Spike-mode inputs run step 5 on the clamped state s = pixel·2^(F−8) with ρ_prev = 0 at t = 1, exactly as
a neuron does; their spikes reach the first hidden layer one step later. Weighted sums are formed in float64
on integer-valued arrays, exact because every partial sum stays below 2^53 (asserted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from poise.errors import PoiseError
from poise.golden.bundle import Bundle
from poise.golden.fixed import FixedFormat, FixedPointSpec, Lfsr, quantise, round_shift, sigma_delta_fixed
from poise.golden.model import build_model
from poise.golden.spec import NetworkSpec
from poise.golden.spiking import Phase, SpikingEqProp, spike_drives

MAX_LR_SHIFT = 15
"""Largest runtime learning-rate shift: rates scale by 2^-k, k = 0 … 15 (a 4-bit field in the RTL)."""
EXACT = 2**53  # float64 holds every integer of smaller magnitude exactly

# Registers recorded by trace(), in the population's column order.
TRACED = ("u", "v", "p", "s", "rho_prev", "a", "phi", "q")


@dataclass
class IntegerResult:
    """A free phase of a batch: predictions, raw output states s (state format), spikes and SynOps per
    image (as the float model counts them) and how often each register saturated."""

    predictions: np.ndarray
    outputs: np.ndarray
    spikes: np.ndarray
    synops: np.ndarray
    saturations: dict[str, int] = field(default_factory=dict)


@dataclass
class Trace:
    """Every register of one image at every step: ``registers[name]`` has shape (steps, n) over all non-input
    neurons (columns ``spans[l]`` for layer l); ``t`` is the step counter; ``input_q`` the input spikes
    (steps, n_in) in spike mode, else None. ``rho_prev`` is the value step 5 used, i.e. s of the step before."""

    t: np.ndarray
    registers: dict[str, np.ndarray]
    spans: list[slice]
    input_q: np.ndarray | None


class IntegerSpikingModel:
    """The sigma-delta spiking network on raw integers; weights and biases are int64 raw arrays."""

    def __init__(self, spec: NetworkSpec, fixed: FixedPointSpec, weights: list[np.ndarray],
                 biases: list[np.ndarray]) -> None:
        self.spec, self.fixed = spec, fixed
        self.weights = [np.array(w, np.int64) for w in weights]  # copies: training changes them in place
        self.biases = [np.array(b, np.int64) for b in biases]
        for name, arrays, fmt in (("weights", self.weights, fixed.weight), ("biases", self.biases, fixed.bias)):
            if not all(fmt.contains(array).all() for array in arrays):
                raise PoiseError(f"{name} lie outside {fmt}")
        self.options = spec.spiking
        if spec.model != "spiking" or self.options is None or self.options.encoder != "sigma_delta":
            raise PoiseError("the integer model implements the sigma-delta spiking network only")
        if (self.options.predictive is None) != (fixed.lambda_rom is None):
            raise PoiseError("the fixed-point spec's λ ROMs do not match the network's predictive coding")
        self.spike_input = self.options.input_mode == "spike"
        # The float model with the same (dequantised) parameters: step indices, SynOp counts, comparisons.
        self.reference: SpikingEqProp = build_model(spec, self.dequantised())  # type: ignore[assignment]
        self.weights_f64 = [w.astype(np.float64) for w in self.weights]  # exact: |w| < 2^53
        sizes = spec.layers[1:]
        starts = np.cumsum((0, *sizes[:-1]))
        self.spans = [slice(int(a), int(a) + n) for a, n in zip(starts, sizes, strict=True)]
        self.shift = fixed.state.frac - fixed.weight.frac  # weight LSBs → state LSBs: exact left shift
        self.check_exact_sums()
        # On-chip learning: the stochastic-rounding source (reseed by assigning a new Lfsr) and the counts
        # of clamped increments, weights and biases, {"saturations": {"increment": …, "w": …, "b": …}}.
        self.lfsr = Lfsr(max(fixed.guard, 1))
        self.learn_saturations: dict = {"saturations": {}}
        self.lr_shift = 0
        """Runtime learning-rate scale 2^-lr_shift (0 … MAX_LR_SHIFT): every increment's rounding shift grows by it."""

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def from_float(cls, spec: NetworkSpec, params: dict[str, np.ndarray], fixed: FixedPointSpec
                   ) -> IntegerSpikingModel:
        """Quantise float parameters (round half up, saturate) into ``fixed``'s weight and bias formats."""
        layers = range(len(spec.layers) - 1)
        return cls(spec, fixed, [quantise(params[f"w{i}"], fixed.weight) for i in layers],
                   [quantise(params[f"b{i}"], fixed.bias) for i in layers])

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> IntegerSpikingModel:
        """The integer model of a bundle that carries a fixed-point spec."""
        if bundle.fixed is None:
            raise PoiseError("the bundle has no fixed-point spec; derive one with derive_fixed_spec")
        return cls.from_float(bundle.spec, bundle.params, bundle.fixed)

    def dequantised(self) -> dict[str, np.ndarray]:
        """The raw parameters as float32 values (exact for formats up to 24 bits)."""
        params = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            params[f"w{i}"] = self.fixed.weight.to_float(w).astype(np.float32)
            params[f"b{i}"] = self.fixed.bias.to_float(b).astype(np.float32)
        return params

    def check_exact_sums(self) -> None:
        """Assert that every weighted sum (u, and the current-mode drive) stays below 2^53 in magnitude."""
        largest = [np.abs(w).sum(axis=0).max() + np.abs(w).sum(axis=1).max() for w in self.weights]
        bound = max(int(v) for v in largest) * max(1, self.fixed.pixel.max_raw)
        if bound >= EXACT:
            raise PoiseError(f"weighted sums up to {bound} would not be exact in float64")

    # -- public interface ----------------------------------------------------------------------------
    def infer(self, pixels: np.ndarray) -> IntegerResult:
        """Free phase of a batch of uint8 images (B, n_in); the class is the argmax of the output s."""
        pixels = self.check_pixels(pixels)
        phases = [Phase(self.spec.steps_free)]
        population, emitted, input_spikes, saturations = self.run(pixels, phases)
        outputs = population["s"][:, self.spans[-1]]
        spikes, synops = self.reference.count_cost(
            pixels, [emitted[:, span].astype(np.float64) for span in self.spans], input_spikes)
        return IntegerResult(outputs.argmax(axis=1), outputs, spikes, synops, saturations)

    def trace(self, pixels: np.ndarray, label: int | None = None, beta_sign: int = 1) -> Trace:
        """Every register at every step for one uint8 image (n_in,); with ``label``, a nudged phase of
        ``steps_nudge`` steps (target one-hot, β of sign ``beta_sign``) follows the free phase."""
        pixels = self.check_pixels(np.asarray(pixels)[np.newaxis])
        phases = [Phase(self.spec.steps_free)]
        if label is not None:
            target = np.zeros((1, self.spec.layers[-1]), np.float32)
            target[0, label] = 1
            phases.append(Phase(self.spec.steps_nudge, target, float(np.sign(beta_sign) or 1)))
        recorder = _Recorder()
        trains = self.input_trains(pixels, self.step_indices(phases)) if self.spike_input else None
        self.run(pixels, phases, recorder, trains)
        return recorder.trace(self.step_indices(phases), self.spans, trains)

    def train_image_traced(self, pixels: np.ndarray, label: int, beta_sign: int = 1) -> tuple[int, Trace]:
        """:meth:`train_image`, and every register at every step of its free and nudged phases (the nudged
        phase learns as it goes, so it differs from :meth:`trace` with a label)."""
        recorder = _Recorder()
        prediction = self.train_image(pixels, label, beta_sign, recorder)
        phases = [Phase(self.spec.steps_free), Phase(self.spec.steps_nudge)]
        trains = None
        if self.spike_input:
            trains = self.input_trains(self.check_pixels(np.asarray(pixels)[np.newaxis]), self.step_indices(phases))
        return prediction, recorder.trace(self.step_indices(phases), self.spans, trains)

    # -- on-chip learning (docs/FIXED_POINT.md "On-chip learning") --------------------------------------
    def train(self, pixels: np.ndarray, labels: np.ndarray, beta_signs: np.ndarray | None = None) -> np.ndarray:
        """Train on uint8 images (B, n_in) one at a time, in order (batch 1, as the hardware does); returns the
        prediction each image got before its update. β's sign alternates +, −, +, … by image when the spec
        asks for a random sign (``random_beta_sign``), else it is +; ``beta_signs`` overrides both."""
        pixels = self.check_pixels(pixels)
        if beta_signs is None:
            beta_signs = (1 - 2 * (np.arange(len(pixels)) % 2)) if self.spec.random_beta_sign else np.ones(len(pixels))
        return np.array([self.train_image(image, int(label), int(sign))
                         for image, label, sign in zip(pixels, labels, beta_signs, strict=True)], np.int64)

    def train_image(self, pixels: np.ndarray, label: int, beta_sign: int = 1,
                    observer: Callable[[dict[str, np.ndarray]], None] | None = None) -> int:
        """One training image, batch 1: free phase, store s⁻, nudged phase towards one-hot ``label`` with β of
        sign ``beta_sign``, applying the spike-triggered rule as read-modify-writes in each accumulate pass.
        Returns the free-phase prediction (before the update). Weights and biases change in place; clamped
        values (w, b, increment and the neuron registers) are counted in ``learn_saturations``; random words
        come from ``self.lfsr``. ``observer`` sees the registers after every step, as in :meth:`run`."""
        fixed = self.fixed
        if fixed.eta is None or fixed.eta_format is None:
            raise PoiseError("the fixed-point spec has no learning constants; derive it with derive_fixed_spec")
        image = self.check_pixels(np.asarray(pixels)[np.newaxis])
        sign = 1 if beta_sign >= 0 else -1
        target = np.zeros((1, self.spec.layers[-1]), np.float32)
        target[0, label] = 1
        free, nudged = Phase(self.spec.steps_free), Phase(self.spec.steps_nudge, target, float(sign))
        t_index = self.step_indices([free, nudged])
        trains = self.input_trains(image, t_index) if self.spike_input else None
        state, _, _, _ = self.run(image, [free], observer, None if trains is None else trains[:free.steps])
        prediction = int(state["s"][0, self.spans[-1]].argmax())
        s_minus = state["s"][0].copy()
        target_raw = quantise(target, fixed.state)
        drive = self.offset(image) - (np.concatenate(self.biases) << self.shift)[np.newaxis]  # 0 in spike mode
        first = self.spans[0]
        summed = np.zeros(first.stop - first.start, np.int64)  # current mode: Σₜ Δs of the first hidden layer
        for k in range(free.steps, len(t_index)):
            q = state["q"][0]
            delta = sign * (state["s"][0] - s_minus)  # s as the accumulate pass of step k sees it: sᵗ⁻¹ − s⁻
            u = np.zeros(len(q), np.int64)
            for layer, weights in enumerate(self.weights):
                upper = self.spans[layer]
                if layer > 0:
                    rows = np.flatnonzero(q[self.spans[layer - 1]])
                elif trains is not None:
                    rows = np.flatnonzero(trains[k - 1, 0])
                else:
                    rows = np.zeros(0, np.int64)
                if len(rows):  # pre-synaptic spikes: read rows, accumulate, write w + Δ(s_upper)
                    block = weights[rows]
                    u[upper] += block.sum(axis=0)
                    increment = np.broadcast_to(self.increment(delta[upper], layer), block.shape)
                    weights[rows] = self.learn_add(block, increment, fixed.weight, "w")
                if layer == 0:
                    continue
                lower = self.spans[layer - 1]
                cols = np.flatnonzero(q[upper])
                if len(cols):  # post-synaptic spikes: read columns (after the row writes), write w + Δ(s_lower)
                    block = weights[:, cols].T
                    u[lower] += block.sum(axis=0)
                    increment = np.broadcast_to(self.increment(delta[lower], layer), block.shape)
                    weights[:, cols] = self.learn_add(block, increment, fixed.weight, "w").T
            offset = (np.concatenate(self.biases) << self.shift)[np.newaxis] + drive  # b before this step's write
            for layer, bias in enumerate(self.biases):
                increment = self.increment(delta[self.spans[layer]], layer)
                self.biases[layer] = self.learn_add(bias, increment, fixed.bias, "b")
            summed += delta[first]
            u_used, p, s_prev = self.neuron_step(state, u[np.newaxis], offset, target_raw, sign, int(t_index[k]))
            if observer is not None:
                observer({**state, "u": u_used, "p": p, "rho_prev": s_prev})
        if trains is None:  # current mode: one sweep over the non-zero pixels' rows of W₀
            rows = np.flatnonzero(image[0])
            increment = self.sweep_increment(image[0, rows, np.newaxis], summed[np.newaxis])
            self.weights[0][rows] = self.learn_add(self.weights[0][rows], increment, fixed.weight, "w")
        counts = self.learn_saturations["saturations"]
        for name, count in state["saturations"].items():  # the neuron registers of both phases
            counts[name] = counts.get(name, 0) + count
        self.weights_f64 = [w.astype(np.float64) for w in self.weights]
        return prediction

    def increment(self, delta: np.ndarray, layer: int) -> np.ndarray:
        """Δw = sat(rs(Δs·η_layer, F + K_η − f_inc + lr_shift)) in the increment format (weight LSBs + g guard
        bits)."""
        fixed = self.fixed
        shift = fixed.state.frac + fixed.eta_format.frac - fixed.increment.frac  # type: ignore[union-attr]
        raw = self.rs(delta * fixed.eta[layer], shift + self.lr_shift)  # type: ignore[index]
        return self.saturate("increment", raw, fixed.increment, self.learn_saturations)

    def sweep_increment(self, pixels: np.ndarray, summed: np.ndarray) -> np.ndarray:
        """Current mode's W₀ increment Δw = sat(rs(pixel·ΣΔs·η₀, 8 + F + K_η − f_inc + lr_shift)) (broadcast)."""
        fixed = self.fixed
        product = pixels.astype(np.int64) * summed * fixed.eta[0]  # type: ignore[index]
        shift = fixed.pixel.frac + fixed.state.frac + fixed.eta_format.frac - fixed.increment.frac  # type: ignore[union-attr]
        return self.saturate("increment", self.rs(product, shift + self.lr_shift), fixed.increment,
                             self.learn_saturations)

    def learn_add(self, values: np.ndarray, increment: np.ndarray, fmt: FixedFormat, name: str) -> np.ndarray:
        """sat(w + ((Δw + r) >> g)): r is the next LFSR word per value in C order (stochastic rounding) or
        2^(g−1) (nearest, half up)."""
        guard = self.fixed.guard
        if self.fixed.learn_rounding == "stochastic":
            noise = self.lfsr.words(increment.size).reshape(increment.shape)
        else:
            noise = np.int64(1 << guard >> 1)
        return self.saturate(name, values + ((increment + noise) >> guard), fmt, self.learn_saturations)

    # -- the arithmetic --------------------------------------------------------------------------------
    def check_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != self.spec.layers[0]:
            raise PoiseError(f"the integer model takes uint8 images of {self.spec.layers[0]} pixels, not "
                             f"{pixels.dtype} {pixels.shape}")
        return pixels

    def step_indices(self, phases: list[Phase]) -> np.ndarray:
        """The step counter t of every step; the ROMs must cover the largest."""
        t = self.reference.step_indices(phases)
        if len(t) and t.max() > self.fixed.steps:
            raise PoiseError(f"the run reaches t = {t.max()} but the ROMs hold {self.fixed.steps} steps")
        return t

    def rs(self, raw: np.ndarray, shift: int) -> np.ndarray:
        return round_shift(raw, shift, self.fixed.rounding)

    def encode(self, s: np.ndarray, state: dict[str, np.ndarray], t: int) -> np.ndarray:
        """Step 5: predictive encoder (1/λ ROM) and sigma-delta; updates φ and ρ_prev in ``state``."""
        fixed = self.fixed
        if fixed.inv_lambda_rom is None:
            a = s
        else:
            step = self.rs((s - state["rho_prev"]) * fixed.inv_lambda_rom[t - 1], fixed.inv_lambda_format.frac)
            a = self.saturate("a", state["rho_prev"] + step, fixed.encoder, state)
        state["a"] = a
        q, state["phi"] = sigma_delta_fixed(a, state["phi"], fixed.encoder)
        return q

    def saturate(self, name: str, raw: np.ndarray, fmt: FixedFormat, state: dict) -> np.ndarray:
        """Clamp ``raw`` to ``fmt`` and count the clamped values in ``state['saturations']``."""
        clamped = fmt.saturate(raw)
        state["saturations"][name] = state["saturations"].get(name, 0) + int(np.count_nonzero(clamped != raw))
        return clamped

    def input_trains(self, pixels: np.ndarray, t_index: np.ndarray) -> np.ndarray:
        """Spike trains (steps, B, n_in) of the clamped inputs, encoded like neurons (step 5)."""
        s = pixels.astype(np.int64) << (self.fixed.state.frac - self.fixed.pixel.frac)
        state = {"rho_prev": np.zeros_like(s), "phi": np.zeros_like(s), "saturations": {}}
        trains = np.empty((len(t_index), *s.shape), np.float32)  # 0/1: exact, half the memory of float64
        for k, t in enumerate(t_index):
            trains[k] = self.encode(s, state, int(t))
            state["rho_prev"] = s
        return trains

    def offset(self, pixels: np.ndarray) -> np.ndarray:
        """b in state LSBs (1 or B, n), plus in current mode the drive W₀ᵀx, rounded once per image."""
        offset = (np.concatenate(self.biases) << self.shift)[np.newaxis, :]
        if self.spike_input:
            return offset
        offset = np.repeat(offset, len(pixels), axis=0)
        drive = pixels.astype(np.float64) @ self.weights_f64[0]  # exact integers, frac f_w + 8
        offset[:, self.spans[0]] += self.rs(drive.astype(np.int64), self.fixed.weight.frac + self.fixed.pixel.frac
                                            - self.fixed.state.frac)
        return offset

    def synaptic_input(self, q: np.ndarray, input_drive: np.ndarray | None) -> np.ndarray:
        """Step 1: u of every non-input neuron from the previous step's spikes (weight LSBs, exact)."""
        u = np.zeros(q.shape, np.float64)
        for i, span in enumerate(self.spans):
            if i > 0:
                u[:, span] += q[:, self.spans[i - 1]] @ self.weights_f64[i]
            elif input_drive is not None:
                u[:, span] += input_drive
            if i + 1 < len(self.spans):
                u[:, span] += q[:, self.spans[i + 1]] @ self.weights_f64[i + 1].T
        return u.astype(np.int64)

    def run(self, pixels: np.ndarray, phases: list[Phase],
            observer: Callable[[dict[str, np.ndarray]], None] | None = None, trains: np.ndarray | None = None
            ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, dict[str, int]]:
        """Relax from zero through ``phases``; returns the final registers, free-phase spikes per neuron,
        input spikes per image in the free phase (spike mode) and saturation counts per register."""
        fixed = self.fixed
        t_index = self.step_indices(phases)
        if self.spike_input and trains is None:
            trains = self.input_trains(pixels, t_index)
        drives = spike_drives(trains, self.weights_f64[0]) if self.spike_input else None
        batch, n = len(pixels), sum(self.spec.layers[1:])
        state: dict = {name: np.zeros((batch, n), np.int64) for name in ("v", "s", "phi", "rho_prev", "q")}
        state["saturations"] = {}
        offset = self.offset(pixels)
        emitted = np.zeros((batch, n), np.int64)
        k = 0
        for phase in phases:
            target = None if phase.target is None else quantise(phase.target, fixed.state)
            for _ in range(phase.steps):
                t = int(t_index[k])
                u = self.synaptic_input(state["q"].astype(np.float64), None if drives is None else drives[k])
                u, p, s_prev = self.neuron_step(state, u, offset, target, phase.beta, t)
                if k < phases[0].steps:
                    emitted += state["q"]
                if observer is not None:
                    observer({**state, "u": u, "p": p, "rho_prev": s_prev})
                k += 1
        input_spikes = None if trains is None else trains[:phases[0].steps].sum(axis=(0, 2))
        return state, emitted, input_spikes, state["saturations"]

    def neuron_step(self, state: dict, u: np.ndarray, offset: np.ndarray, target: np.ndarray | None, beta: float,
                    t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps 2-5 of one step from the accumulated u (weight LSBs); updates ``state`` in place and returns
        (saturated u, p, s of the step before)."""
        fixed = self.fixed
        u = self.saturate("u", u, fixed.accumulator, state)
        aligned = u << self.shift
        if fixed.lambda_rom is None:
            v = aligned
        else:
            v = state["v"] + self.rs((aligned - state["v"]) * fixed.lambda_rom[t - 1], fixed.lambda_format.frac)
        state["v"] = self.saturate("v", v, fixed.decoded, state)
        p = state["v"] + offset
        if target is not None:
            output = self.spans[-1]
            nudge = self.rs((target - state["s"][:, output]) * fixed.two_beta, fixed.beta_format.frac)
            p[:, output] += nudge if beta >= 0 else -nudge
        p = self.saturate("p", p, fixed.pressure, state)
        s_prev = state["s"]
        s = np.clip(s_prev + self.rs((p - s_prev) * fixed.epsilon_rom[t - 1], fixed.epsilon_format.frac),
                    0, fixed.state.one)
        state["q"] = self.encode(s, state, t)
        state["s"], state["rho_prev"] = s, s
        return u, p, s_prev


class _Recorder:
    """An observer of :meth:`IntegerSpikingModel.run` that keeps the traced registers of image 0."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {name: [] for name in TRACED}

    def __call__(self, registers: dict[str, np.ndarray]) -> None:
        for name in TRACED:
            self.rows[name].append(registers[name][0].copy())

    def trace(self, t: np.ndarray, spans: list[slice], trains: np.ndarray | None) -> Trace:
        return Trace(t, {name: np.stack(self.rows[name]) for name in TRACED}, spans,
                     None if trains is None else trains[:, 0].astype(np.int64))
