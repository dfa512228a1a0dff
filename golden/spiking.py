"""O'Connor's binary ("spiking") Equilibrium Propagation, [000] Eq. 14, vectorised over the batch.

Only spikes travel between neurons. Every non-input neuron keeps s (state), v (decoded input), φ
(sigma-delta integrator) and ρ(sᵗ⁻¹) (for the predictive encoder). All layers step synchronously from the
spikes of the previous step. The step counter t indexes the ε and λ schedules; by default it runs on
across the free/nudged boundary and restarts for every minibatch (authors' code).

Input neurons are clamped. In ``spike`` mode they are encoded like any neuron (their spike trains depend
only on x, so they are generated for the whole run up front and the drive they deliver is one large
matrix product). In ``current`` mode the exact drive xᵀW₀ is added to the first hidden layer every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from poise.golden.continuous import contrastive_update
from poise.golden.equations import (
    OptimalStepsize,
    nudge_force,
    osa_nu,
    predictive_decode,
    predictive_encode,
    rho,
    sigma_delta,
    spiking_state_step,
    stochastic_encode,
)
from poise.golden.model import EqPropModel, Result, register_model
from poise.golden.spec import SpikingOptions

StepObserver = Callable[[int, list[np.ndarray]], None]


@dataclass
class Phase:
    """One relaxation phase: its length, and for the nudged phase the one-hot target and β."""

    steps: int
    target: np.ndarray | None = None
    beta: float = 0.0


@dataclass
class LayerState:
    """The per-neuron registers of a population, shape (B, n). A run keeps all non-input layers side by
    side in one population (columns ``spans[l]`` for layer l), so every elementwise step is one array op."""

    s: np.ndarray
    v: np.ndarray
    phi: np.ndarray
    rho_prev: np.ndarray
    q: np.ndarray

    @classmethod
    def zeros(cls, batch: int, size: int) -> LayerState:
        return cls(*(np.zeros((batch, size), np.float32) for _ in range(5)))


@dataclass
class RunRecord:
    """What a run reports: states at the end of each phase, spike counts and learning traces."""

    phase_states: list[list[np.ndarray]] = field(default_factory=list)
    spikes: np.ndarray | None = None  # per image, free phase only
    synops: np.ndarray | None = None  # per image, free phase only
    weight_traces: list[np.ndarray] | None = None  # spike-triggered Σ_t terms per weight layer
    bias_traces: list[np.ndarray] | None = None


class SpikeTriggeredTraces:
    """Running sums of the spike-triggered rule over a nudged phase (EqSpike Eq. 1, see
    :meth:`SpikingEqProp.apply_spike_triggered`): Σₜ qᵢᵗ(ρⱼᵗ − ρⱼ⁻) + (ρᵢᵗ − ρᵢ⁻)qⱼᵗ per weight."""

    def __init__(self, states: list[np.ndarray], weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        self.minus = [rho(s) for s in states]
        self.weights = [np.zeros_like(w) for w in weights]
        self.biases = [np.zeros_like(b) for b in biases]
        self.first_hidden_deltas: list[np.ndarray] = []

    def accumulate(self, states: list[np.ndarray], spikes: list[np.ndarray]) -> None:
        """Add one step, given every non-input layer's state s and spikes q."""
        deltas = [rho(s) - m for s, m in zip(states, self.minus, strict=True)]
        self.first_hidden_deltas.append(deltas[0])
        for i in range(1, len(states)):
            self.weights[i] += spikes[i - 1].T @ deltas[i] + deltas[i - 1].T @ spikes[i]
        for i, delta in enumerate(deltas):
            self.biases[i] += delta.sum(axis=0)

    def finish_input_layer(self, pre: np.ndarray) -> None:
        """Add the input→hidden term in one product; ``pre`` is (steps, B, n_in) spikes or activities."""
        deltas = np.concatenate(self.first_hidden_deltas)
        self.weights[0] += pre.reshape(-1, pre.shape[-1]).T @ deltas


class Encoder:
    """Predictive encoder (Eq. 12) followed by a quantiser (Eq. 11 or Eq. 8) for one population."""

    def __init__(self, options: SpikingOptions, rng: np.random.Generator | None) -> None:
        self.options = options
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def __call__(self, rho_now: np.ndarray, state: LayerState, lam: float) -> np.ndarray:
        a = rho_now if self.options.predictive is None else predictive_encode(rho_now, state.rho_prev, lam)
        if self.options.encoder == "sigma_delta":
            q, state.phi = sigma_delta(a, state.phi)
        elif self.options.encoder == "identity":
            q = a
        else:
            q = stochastic_encode(a, self.rng)
        state.rho_prev = rho_now
        return q


class InputTrains:
    """Spike trains of the clamped input layer for one run (``spike`` input mode), and the drive they give
    the first hidden layer. The inputs depend only on x, so the trains of the whole run are encoded up
    front and the drive of every step comes from one product per image over the pixels that image ever
    spikes on (an MNIST digit: about 140 of 784; the union over a batch of 20: about 430)."""

    def __init__(self, x: np.ndarray, encoder: Encoder, lam: np.ndarray) -> None:
        """Encode ``x`` (B, n_in) for every step; ``lam[k]`` is λ at step k of the run; s_in = x."""
        state = LayerState.zeros(*x.shape)
        rate = rho(x)
        self.trains = np.stack([encoder(rate, state, lam_t) for lam_t in lam])  # (steps, B, n_in)

    def spikes(self, steps: slice) -> np.ndarray:
        """Spikes of every pixel at the given steps, shape (steps, B, n_in)."""
        return self.trains[steps]

    def spikes_per_image(self, steps: slice) -> np.ndarray:
        """Input spikes per image over the given steps."""
        return self.trains[steps].sum(axis=(0, 2), dtype=np.float64)

    def drives(self, w0: np.ndarray) -> np.ndarray:
        """Drive of the first hidden layer at every step from the input spikes of the step before
        (zero at the first step), shape (steps, B, n₁)."""
        return spike_drives(self.trains, w0)


def spike_drives(trains: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """Σᵢ qᵢᵗ⁻¹·wᵢⱼ for input spike trains (steps, B, n_in), zero at the first step; shape (steps, B, n₁) in
    ``w0``'s dtype. One product per image over the pixels that ever spike."""
    steps, batch, _ = trains.shape
    drives = np.zeros((batch, steps, w0.shape[1]), w0.dtype)
    earlier = trains[:-1]
    for image, active in enumerate(earlier.any(axis=0)):
        pixels = np.flatnonzero(active)  # pixels that never spike cost nothing
        np.matmul(earlier[:, image, pixels], w0[pixels], out=drives[image, 1:])
    return drives.transpose(1, 0, 2)


@register_model("spiking")
class SpikingEqProp(EqPropModel):
    """Eq. 14 neurons with sigma-delta or stochastic encoders, optional predictive coding, OSA or
    scheduled ε, ``spike``/``current`` input, and the contrastive or spike-triggered learning rule."""

    @property
    def options(self) -> SpikingOptions:
        return self.spec.spiking or SpikingOptions()

    # -- schedules ---------------------------------------------------------------------------------
    def step_indices(self, phases: list[Phase]) -> np.ndarray:
        """The 1-based schedule index t of every step of the run."""
        indices, start = [], 1
        for phase in phases:
            if not self.options.continue_time:
                start = 1
            indices.append(np.arange(start, start + phase.steps))
            start += phase.steps
        return np.concatenate(indices) if indices else np.zeros(0, np.int64)

    def tables(self, longest: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(ε table or None for OSA, λ table) for t = 1..longest, index 0 unused."""
        eps = None
        if self.spec.epsilon.kind != "osa":
            eps = np.concatenate([[np.float32(1)], self.spec.epsilon.table(longest)])
        predictive = self.options.predictive
        lam = np.ones(longest + 1, np.float32)
        if predictive is not None:
            lam[1:] = predictive.table(longest)
        return eps, lam

    # -- one run: free phase, then optional nudged phase ---------------------------------------------
    def run(
        self,
        x: np.ndarray,
        phases: list[Phase],
        rng: np.random.Generator | None = None,
        observer: StepObserver | None = None,
        learn_traces: bool = False,
    ) -> RunRecord:
        """Relax the network through ``phases`` from zero states; optionally call ``observer(k, states)``
        after every step and accumulate the spike-triggered learning traces in the last phase."""
        options = self.options
        batch = len(x)
        sizes = self.spec.layers[1:]
        weights, biases = self.weights, self.biases
        t_index = self.step_indices(phases)
        eps_table, lam_table = self.tables(int(t_index.max()) if len(t_index) else 1)
        spike_input = options.input_mode == "spike"
        inputs = InputTrains(x, Encoder(options, rng), lam_table[t_index]) if spike_input else None
        drives_in = inputs.drives(weights[0]) if spike_input else None
        starts = np.cumsum((0, *sizes[:-1]))
        spans = [slice(int(start), int(start) + n) for start, n in zip(starts, sizes, strict=True)]
        output = spans[-1]
        offset = np.concatenate(biases)[np.newaxis, :]  # constant per run: bias, + xᵀW₀ in current mode
        if not spike_input:
            offset = np.repeat(offset, batch, axis=0)
            offset[:, spans[0]] += x @ weights[0]
        population = LayerState.zeros(batch, sum(sizes))
        encoder = Encoder(options, rng)
        stepper = None
        if eps_table is None:
            stepper = OptimalStepsize(population.s.shape, osa_nu(len(t_index), self.spec.epsilon.osa_target))

        def per_layer(values: np.ndarray) -> list[np.ndarray]:
            return [values[:, span] for span in spans]

        record = RunRecord()
        free_steps = phases[0].steps
        emitted = np.zeros_like(population.q)  # free-phase spikes per neuron
        k = 0
        for phase_number, phase in enumerate(phases):
            learning = learn_traces and phase_number == len(phases) - 1 and phase_number > 0
            if learning:
                traces = SpikeTriggeredTraces(per_layer(population.s), weights, biases)
            for _ in range(phase.steps):
                t = t_index[k]
                lam = lam_table[t]
                # u for every layer from the previous step's spikes (synchronous update).
                u = self.synaptic_input(population.q, spans, drives_in[k] if spike_input else None)
                population.v = u if options.predictive is None else predictive_decode(population.v, u, lam)
                pressure = population.v + offset  # ρ'(s) = 1 on clipped states (ALGORITHMS.md §1.1)
                if phase.target is not None:
                    pressure[:, output] += nudge_force(population.s[:, output], phase.target, phase.beta)
                eps = eps_table[t] if stepper is None else stepper.step(pressure)
                population.s = spiking_state_step(population.s, pressure, eps)
                population.q = encoder(population.s, population, lam)  # ρ(s) = s on clipped states
                if k < free_steps:
                    emitted += population.q
                if learning:
                    traces.accumulate(per_layer(population.s), per_layer(population.q))
                if observer is not None:
                    observer(k, per_layer(population.s))
                k += 1
            record.phase_states.append([state.copy() for state in per_layer(population.s)])
            if learning:
                first = k - phase.steps
                pre = inputs.spikes(slice(first, k)) if spike_input else np.broadcast_to(x, (phase.steps, *x.shape))
                traces.finish_input_layer(pre)
                record.weight_traces, record.bias_traces = traces.weights, traces.biases
        record.spikes, record.synops = self.count_cost(
            x, per_layer(emitted), inputs.spikes_per_image(slice(free_steps)) if spike_input else None)
        return record

    def synaptic_input(self, q: np.ndarray, spans: list[slice], input_drive: np.ndarray | None) -> np.ndarray:
        """u of every non-input layer from the spikes q of the step before: Σ q·W from below and Σ q·Wᵀ
        from above (symmetric weights); ``input_drive`` is the first layer's drive from the input, if any."""
        weights = self.weights
        u = np.empty_like(q)
        for i, span in enumerate(spans):
            target = u[:, span]
            if i > 0:
                np.matmul(q[:, spans[i - 1]], weights[i], out=target)
            elif input_drive is not None:
                target[...] = input_drive
            else:
                target[...] = 0
            if i + 1 < len(spans):
                target += q[:, spans[i + 1]] @ weights[i + 1].T
        return u

    def count_cost(self, x: np.ndarray, emitted: list[np.ndarray],
                   input_spikes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Spikes and SynOps per image of a free phase (see docs/ALGORITHM_CHOICES.md).

        A spike of a non-input layer reaches the next layer and, unless it is the clamped input, the
        previous one. Input spikes reach the first hidden layer; in current mode the input costs one
        operation per non-zero pixel per hidden neuron. ``emitted`` holds each layer's spikes per neuron;
        ``input_spikes`` the input spikes per image (spike mode) or None (current mode).
        """
        sizes = self.spec.layers[1:]
        spikes = np.zeros(len(x))
        synops = np.zeros(len(x))
        for i, total in enumerate(emitted):
            per_image = total.sum(axis=1, dtype=np.float64)
            fan_out = (sizes[i + 1] if i + 1 < len(sizes) else 0) + (sizes[i - 1] if i > 0 else 0)
            spikes += per_image
            synops += per_image * fan_out
        if input_spikes is not None:
            spikes += input_spikes
            synops += input_spikes * sizes[0]
        else:
            synops += (x > 0).sum(axis=1) * sizes[0]
        return spikes, synops

    # -- the EqPropModel interface -----------------------------------------------------------------
    def infer(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Result:
        record = self.run(x, [Phase(self.spec.steps_free)], rng)
        return Result(record.phase_states[0][-1], record.spikes, record.synops)

    def train_batch(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Result:
        beta = self.beta_for_batch(rng)
        phases = [Phase(self.spec.steps_free), Phase(self.spec.steps_nudge, self.one_hot(labels), beta)]
        spike_rule = self.options.rule == "spike_triggered"
        record = self.run(x, phases, rng, learn_traces=spike_rule)
        minus, plus = record.phase_states
        if spike_rule:
            self.apply_spike_triggered(record, beta, len(x))
        else:
            contrastive_update(self, x, minus, plus, beta)
        return Result(minus[-1], record.spikes, record.synops)

    def apply_spike_triggered(self, record: RunRecord, beta: float, batch: int) -> None:
        """EqSpike Eq. 1 in spike form: every pre-synaptic spike i at step t of the nudged phase adds
        η·(ρⱼᵗ − ρⱼ⁻) to wᵢⱼ, and every post-synaptic spike j adds η·(ρᵢᵗ − ρᵢ⁻) (inputs are clamped,
        so their Δρ is 0). η = η_l/(β·T⁺) makes the expected update match Eq. 2.12, since a neuron
        spikes about ρ·T⁺ times in the phase. Biases see a pre-neuron that is always on.
        Updates are summed over the phase and the batch mean is applied at its end."""
        norm = beta * self.spec.steps_nudge * batch
        for layer, rate in enumerate(self.spec.learning_rates):
            self.params[f"w{layer}"] += (rate / norm) * record.weight_traces[layer]
            self.params[f"b{layer}"] += (rate / norm) * record.bias_traces[layer]
