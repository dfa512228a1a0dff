"""EqSpike: spike-driven Equilibrium Propagation (Martin et al. [002]), vectorised over the batch.

Every neuron, inputs included, is a leaky integrate-and-fire (LIF) neuron and only spikes travel between
neurons, through symmetric synapses (one weight ``w[i, j]`` serves both directions). Each non-input neuron
also runs the rate-derivative extractor of [002] Fig. 1e: a leaky integrator of its own spikes, a τ-step
delay-and-difference and an N_filt-step moving average, whose output F ≈ (τ/γ_LI)·ṙ. In the nudged phase
every spike triggers a weight change ([002] Algorithm 1): when j spikes, ``w[i, j] += η_r·F_i``; when i
spikes, ``w[i, j] += η_r·F_j``. Summed over the phase this is l_r·Δ(ρ_i ρ_j), the contrastive EqProp rule
([002] Eq. 1).

Rates ``ρ`` are in units of f_max = 1/T_refract (ρ ∈ [0, 1], like the hard sigmoid the LIF rate
approximates). All layers step synchronously from the spikes of the previous step. Every parameter that
[002] leaves to its Supplementary Information is a field of :class:`EqSpikeOptions`; docs/EQSPIKE.md
justifies each choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poise.golden.equations import rho
from poise.golden.model import EqPropModel, Result, register_model
from poise.golden.spec import EqSpikeOptions, NetworkSpec

GOLDEN_RATIO_FRACTION = 0.6180339887498949


# -- the equations of [002], one function each --------------------------------------------------------------
def lif_step(
    u: np.ndarray, refractory: np.ndarray, current: np.ndarray, options: EqSpikeOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LIF step u_j(γ_LIF, I_j) with a spike when u_j > u_th ([002] Algorithm 1); returns
    (u, spikes, refractory).

    ``u ← (1 − γ_LIF)u + I``; a neuron whose refractory counter is 0 and whose u exceeds u_th spikes, loses
    u_th (reset by subtraction) and may not spike for the next T_refract − 1 steps, so its rate is at most
    f_max = 1/T_refract. The membrane keeps integrating while refractory and saturates at
    [floor·u_th, ceiling·u_th]. With γ_LIF = 0 the rate is f_max·ρ(I/(f_max·u_th)), a hard sigmoid.
    """
    u = (1.0 - options.leak_lif) * u + current
    spikes = (u > options.threshold) & (refractory == 0)
    u = np.clip(u - options.threshold * spikes, options.floor * options.threshold,
                options.ceiling * options.threshold).astype(np.float32)
    refractory = np.where(spikes, options.refractory_steps - 1, np.maximum(refractory - 1, 0))
    return u, spikes.astype(np.float32), refractory


def leaky_integrate(v: np.ndarray, spikes: np.ndarray, leak: float) -> np.ndarray:
    """The rate integrator of [002] Fig. 1e, ``V_LI ← (1 − γ_LI)·V_LI + S(t)``: V_LI ≈ (spikes per step)/γ_LI."""
    return (np.float32(1.0 - leak) * v + spikes).astype(np.float32)


def integrator_rate(v: np.ndarray, options: EqSpikeOptions) -> np.ndarray:
    """The rate in units of f_max that a leaky-integrator value stands for: ρ = γ_LI·V_LI/f_max."""
    return v * np.float32(options.leak_li * options.refractory_steps)


def spike_triggered_update(
    pre_spikes: np.ndarray, post_spikes: np.ndarray, pre_filtered: np.ndarray, post_filtered: np.ndarray,
    eta: float,
) -> np.ndarray:
    """The synapse block of [002] Algorithm 1 for one step, summed over the batch (leading axis).

    ``Δw[i, j] = η_r·(S_i·F_j + F_i·S_j)``: a spike of pre-neuron i adds η_r·F_j, a spike of post-neuron j
    adds η_r·F_i. The form is symmetric: exchanging the two layers gives the transpose.
    """
    return np.float32(eta) * (pre_spikes.T @ post_filtered + pre_filtered.T @ post_spikes)


def input_phases(size: int, threshold: float) -> np.ndarray:
    """Initial membranes of the input neurons, u_i(0) = frac(i·φ)·u_th with φ = (√5 − 1)/2 (our choice).

    A fixed low-discrepancy spread of phases, so that inputs with equal intensity do not all fire on the
    same steps; the hidden layers then see a smooth drive instead of synchronous volleys.
    """
    return (np.modf(np.arange(size) * GOLDEN_RATIO_FRACTION)[0] * threshold).astype(np.float32)


class MovingAverage:
    """x̄(t) = (1/N)·Σ_{k<N} x(t − k) for a (B, n) signal, x = 0 before the start ([002] "EqSpike…").

    A ring buffer of depth N and a running sum S ← S + x(t) − x(t − N) (ALGORITHMS.md §4.2 item 12).
    """

    def __init__(self, shape: tuple[int, int], length: int) -> None:
        self.line = np.zeros((length, *shape), np.float32)
        self.total = np.zeros(shape, np.float32)
        self.t = 0

    def step(self, x: np.ndarray) -> np.ndarray:
        slot = self.t % len(self.line)
        self.total += x - self.line[slot]
        self.line[slot] = x
        self.t += 1
        return self.value

    @property
    def value(self) -> np.ndarray:
        return self.total / np.float32(len(self.line))

    def take(self, rows: np.ndarray) -> None:
        """Keep only the images ``rows`` of the batch."""
        self.line, self.total = self.line[:, rows], self.total[rows]


class RateDerivative:
    """The per-neuron extractor of [002] Fig. 1e for a (B, n) population.

    ``step(spikes)`` updates V_LI and returns F(t) = mean over the last N_filt steps of V_LI(t) − V_LI(t − τ),
    which approximates τ·dV_LI/dt ≈ (τ/γ_LI)·ṙ (ṙ: change of the rate in spikes per step, per step).
    V_LI(t) = 0 before the start. The τ-deep delay line is a ring buffer.
    """

    def __init__(self, shape: tuple[int, int], options: EqSpikeOptions) -> None:
        self.leak = options.leak_li
        self.v = np.zeros(shape, np.float32)
        self.delay_line = np.zeros((options.delay, *shape), np.float32)
        self.filter = MovingAverage(shape, options.filter_length)
        self.t = 0

    def step(self, spikes: np.ndarray) -> np.ndarray:
        self.v = leaky_integrate(self.v, spikes, self.leak)
        slot = self.t % len(self.delay_line)
        difference = self.v - self.delay_line[slot]
        self.delay_line[slot] = self.v
        self.t += 1
        return self.filter.step(difference)

    def take(self, rows: np.ndarray) -> None:
        self.v, self.delay_line = self.v[rows], self.delay_line[:, rows]
        self.filter.take(rows)


@dataclass
class Population:
    """The LIF registers of one non-input layer, shape (B, n), and its spikes of the last step."""

    u: np.ndarray
    refractory: np.ndarray
    spikes: np.ndarray

    @classmethod
    def rest(cls, batch: int, size: int) -> Population:
        zeros = np.zeros((batch, size), np.float32)
        return cls(zeros, np.zeros((batch, size), np.int64), zeros.copy())

    def step(self, current: np.ndarray, options: EqSpikeOptions) -> None:
        self.u, self.spikes, self.refractory = lif_step(self.u, self.refractory, current, options)

    def take(self, rows: np.ndarray) -> None:
        self.u, self.refractory, self.spikes = self.u[rows], self.refractory[rows], self.spikes[rows]


@dataclass
class Run:
    """What one run reports. Spikes and SynOps count the free phase only (one inference)."""

    rates: np.ndarray  # (B, n_out) free-phase output rates in units of f_max: the read-out
    spikes: np.ndarray  # (B,) spikes per image, all layers, inputs included
    synops: np.ndarray  # (B,) spikes × synapses they cross, per image
    weight_updates: list[np.ndarray] | None = None  # Σ over steps and images of S_i·F_j + F_i·S_j (before η_r)
    bias_updates: list[np.ndarray] | None = None  # Σ over steps and images of F_j
    nudged_rows: np.ndarray | None = None  # the images of the batch that had a nudged phase
    nudged_rates: np.ndarray | None = None  # their output rates (N_filt mean) at the end of it

    @property
    def nudged(self) -> int:
        return 0 if self.nudged_rows is None else len(self.nudged_rows)


# -- the model ----------------------------------------------------------------------------------------------
@register_model("eqspike")
class EqSpikeModel(EqPropModel):
    """LIF network with a free and a nudged phase and the spike-triggered update of [002] Algorithm 1.

    The updates of every step of the nudged phase are summed over the phase and over the images of the
    batch (not averaged: ``learning_rates`` hold the per-image l_r of [002]) and applied at the end of the
    batch. With batch 1 (the paper) this differs from per-spike application only by terms of order l_r².
    ``rng`` is not used: the dynamics are deterministic.
    """

    def __init__(self, spec: NetworkSpec, params: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, params)
        self.nudged_images = 0  # diagnostics: images that needed a nudged phase since construction

    @property
    def options(self) -> EqSpikeOptions:
        return self.spec.eqspike or EqSpikeOptions()

    @property
    def eta_r(self) -> list[float]:
        """η_r per weight layer, from [002]'s l_r = η_r·τ/γ_LI with rates in units of f_max:
        η_r = l_r·γ_LI/(τ·f_max²), so that Σ_t η_r·S_i(t)·F_j(t) ≈ l_r·∫ρ_i·ρ̇_j dt."""
        o = self.options
        f_max = 1.0 / o.refractory_steps
        return [rate * o.leak_li / (o.delay * f_max * f_max) for rate in self.spec.learning_rates]

    @property
    def bias_eta(self) -> list[float]:
        """η per bias, η_r·f_max²: the bias b_j is the current of a virtual neuron firing at f_max (ρ = 1)
        through a synapse of weight b_j/f_max, so the rule moves that weight by l_r·Δρ_j, as for any weight,
        and b_j by f_max·l_r·Δρ_j. Since Σ_t F_j ≈ l_r·Δρ_j/(η_r·f_max), Δb_j = η_r·f_max²·Σ_t F_j."""
        f_max = 1.0 / self.options.refractory_steps
        return [eta * f_max * f_max for eta in self.eta_r]

    # -- the input layer -----------------------------------------------------------------------------------
    def input_spikes(self, x: np.ndarray, steps: int) -> np.ndarray:
        """Spike trains (steps, B, n_in) of the input LIF neurons, driven by the constant current g·u_th·x."""
        o = self.options
        current = np.float32(o.input_gain * o.threshold) * rho(x).astype(np.float32)
        u = np.zeros_like(current)
        if o.input_phases:
            u = u + input_phases(x.shape[1], o.threshold)
        refractory = np.zeros(current.shape, np.int64)
        trains = np.empty((steps, *x.shape), np.float32)
        for t in range(steps):
            u, trains[t], refractory = lif_step(u, refractory, current, o)
        return trains

    def input_drive(self, trains: np.ndarray) -> np.ndarray:
        """Current into the first hidden layer at every step, from the input spikes of the step before."""
        steps, batch, n_in = trains.shape
        w0 = self.weights[0]
        drive = np.zeros((steps, batch, w0.shape[1]), np.float32)
        flat = trains[:-1].reshape(-1, n_in)
        active = flat.any(axis=0)  # pixels that never spike cost nothing
        drive[1:] = (flat[:, active] @ w0[active]).reshape(steps - 1, batch, -1)
        return drive

    # -- dynamics ------------------------------------------------------------------------------------------
    def step(self, layers: list[Population], drive: np.ndarray, nudge: np.ndarray | None = None) -> None:
        """One synchronous step: currents I_j = Σ_i w_ij·S_i(t − 1) + b_j from both neighbouring layers
        (symmetric weights), plus ``nudge`` on the outputs; then every LIF neuron steps."""
        weights, biases = self.weights, self.biases
        currents = []
        for i in range(len(layers)):
            current = (drive if i == 0 else layers[i - 1].spikes @ weights[i]) + biases[i]
            if i + 1 < len(layers):
                current = current + layers[i + 1].spikes @ weights[i + 1].T
            currents.append(current)
        if nudge is not None:
            currents[-1] = currents[-1] + nudge
        for layer, current in zip(layers, currents, strict=True):
            layer.step(current, self.options)

    def target_rates(self, labels: np.ndarray) -> np.ndarray:
        """ρ̂: ``target_rate_high`` for the label's output neuron, ``target_rate_low`` for the others."""
        o = self.options
        return (o.target_rate_low + (o.target_rate_high - o.target_rate_low) * self.one_hot(labels)).astype(
            np.float32)

    def run(self, x: np.ndarray, labels: np.ndarray | None = None) -> Run:
        """Free phase of T_free steps from rest; with ``labels`` also the nudged phase of T_nudge steps, for
        the images whose output rates miss their targets by more than ``nudge_skip`` ([002] "Training speed
        and energy"), accumulating the spike-triggered updates of [002] Algorithm 1."""
        o, spec = self.options, self.spec
        batch, sizes = len(x), spec.layers[1:]
        steps = spec.steps_free + (spec.steps_nudge if labels is not None else 0)
        trains = self.input_spikes(x, steps)
        drive = self.input_drive(trains)
        layers = [Population.rest(batch, n) for n in sizes]
        extractors = [RateDerivative((batch, n), o) for n in sizes]
        output_rate = MovingAverage((batch, sizes[-1]), o.filter_length)

        # Free phase: no learning; the extractors run so that their buffers hold the free-phase history.
        fan_out = [(sizes[i - 1] if i > 0 else 0) + (sizes[i + 1] if i + 1 < len(sizes) else 0)
                   for i in range(len(sizes))]
        spikes = trains[: spec.steps_free].sum(axis=(0, 2), dtype=np.float64)
        synops = spikes * sizes[0]
        counts = np.zeros((batch, sizes[-1]), np.float32)
        for t in range(spec.steps_free):
            self.step(layers, drive[t])
            for i, layer in enumerate(layers):
                per_image = layer.spikes.sum(axis=1, dtype=np.float64)
                spikes += per_image
                synops += per_image * fan_out[i]
            counts += layers[-1].spikes
            if labels is not None:  # inference needs no extractors
                for layer, extractor in zip(layers, extractors, strict=True):
                    extractor.step(layer.spikes)
                output_rate.step(integrator_rate(extractors[-1].v, o))
        run = Run(counts / np.float32(spec.steps_free / o.refractory_steps), spikes, synops)
        if labels is None:
            return run

        run.weight_updates = [np.zeros_like(w) for w in self.weights]
        run.bias_updates = [np.zeros_like(b) for b in self.biases]
        target = self.target_rates(labels)
        miss = np.abs(np.clip(output_rate.value, 0.0, 1.0) - target).max(axis=1)
        rows = np.flatnonzero(miss > o.nudge_skip)
        run.nudged_rows = rows
        if not run.nudged:
            return run
        for part in (*layers, *extractors, output_rate):
            part.take(rows)
        target, drive = target[rows], drive[:, rows]

        # Nudged phase: u_o ← u_o − β·∇e_o with e = ½‖ρ_o − ρ̂‖², ρ_o the output's leaky-integrator rate.
        beta = np.float32(spec.beta)
        filtered_first = []
        for t in range(spec.steps_free, steps):
            error = np.clip(integrator_rate(extractors[-1].v, o), 0.0, 1.0) - target
            self.step(layers, drive[t], -beta * error)
            filtered = [ex.step(layer.spikes) for ex, layer in zip(extractors, layers, strict=True)]
            output_rate.step(integrator_rate(extractors[-1].v, o))
            filtered_first.append(filtered[0])
            for i in range(1, len(layers)):
                run.weight_updates[i] += spike_triggered_update(
                    layers[i - 1].spikes, layers[i].spikes, filtered[i - 1], filtered[i], 1.0)
            for i, f in enumerate(filtered):
                run.bias_updates[i] += f.sum(axis=0)  # the bias's virtual neuron: see bias_eta
        # W₀: clamped inputs have a constant rate, so F_in = 0 and only the input spikes trigger updates.
        pre = trains[spec.steps_free:, rows].reshape(-1, x.shape[1])
        run.weight_updates[0] += pre.T @ np.concatenate(filtered_first)
        run.nudged_rates = output_rate.value
        return run

    # -- the EqPropModel interface -------------------------------------------------------------------------
    def infer(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Result:
        """Free phase; ``outputs`` are the output rates over it, so the class is the output neuron with the
        most spikes ([002] "Inference speed and energy", rate read-out)."""
        run = self.run(x)
        return Result(run.rates, run.spikes, run.synops)

    def train_batch(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Result:
        """Free phase, nudged phase with spike-triggered learning; the summed update is applied at the end."""
        run = self.run(x, labels)
        self.nudged_images += run.nudged
        if run.nudged:
            for layer, (eta, bias_eta) in enumerate(zip(self.eta_r, self.bias_eta, strict=True)):
                self.params[f"w{layer}"] += np.float32(eta) * run.weight_updates[layer]
                self.params[f"b{layer}"] += np.float32(bias_eta) * run.bias_updates[layer]
        return Result(run.rates, run.spikes, run.synops)
