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
    """The per-neuron registers of one non-input layer, shape (B, n)."""

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

    def __init__(self, layers: list[LayerState], weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        self.minus = [rho(layer.s) for layer in layers]
        self.weights = [np.zeros_like(w) for w in weights]
        self.biases = [np.zeros_like(b) for b in biases]
        self.first_hidden_deltas: list[np.ndarray] = []

    def accumulate(self, layers: list[LayerState]) -> None:
        deltas = [rho(layer.s) - m for layer, m in zip(layers, self.minus, strict=True)]
        self.first_hidden_deltas.append(deltas[0])
        for i in range(1, len(layers)):
            self.weights[i] += layers[i - 1].q.T @ deltas[i] + deltas[i - 1].T @ layers[i].q
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

    # -- the input layer ---------------------------------------------------------------------------
    def input_spikes(self, x: np.ndarray, t_index: np.ndarray, lam: np.ndarray,
                     rng: np.random.Generator | None) -> np.ndarray:
        """Spike trains of the clamped inputs for every step, shape (steps, B, n_in); s_in = x."""
        state = LayerState.zeros(*x.shape)
        encoder = Encoder(self.options, rng)
        rate = rho(x)
        return np.stack([encoder(rate, state, lam[t]) for t in t_index])

    def input_drives(self, x: np.ndarray, spikes_in: np.ndarray | None) -> np.ndarray:
        """Drive of the first hidden layer from the input at each step (spike mode: from qᵗ⁻¹)."""
        steps = 0 if spikes_in is None else len(spikes_in)
        w0 = self.weights[0]
        drives = np.zeros((steps, len(x), w0.shape[1]), np.float32)
        if steps > 1:
            flat = spikes_in[:-1].reshape(-1, w0.shape[0])
            active = flat.any(axis=0)  # pixels that never spike in this batch cost nothing
            drives[1:] = (flat[:, active] @ w0[active]).reshape(steps - 1, len(x), -1)
        return drives

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
        spikes_in = self.input_spikes(x, t_index, lam_table, rng) if spike_input else None
        drives_in = self.input_drives(x, spikes_in) if spike_input else None
        # Constant per run: bias, plus the exact input drive in current mode.
        offsets = [b[np.newaxis, :] for b in biases]
        if not spike_input:
            offsets[0] = offsets[0] + x @ weights[0]

        layers = [LayerState.zeros(batch, n) for n in sizes]
        encoders = [Encoder(options, rng) for _ in sizes]
        steppers = None
        if eps_table is None:
            nu = osa_nu(len(t_index), self.spec.epsilon.osa_target)
            steppers = [OptimalStepsize((batch, n), nu) for n in sizes]

        record = RunRecord()
        free_steps = phases[0].steps
        emitted = [np.zeros((batch, n), np.float32) for n in sizes]  # free-phase spikes per neuron
        k = 0
        for phase_number, phase in enumerate(phases):
            learning = learn_traces and phase_number == len(phases) - 1 and phase_number > 0
            if learning:
                traces = SpikeTriggeredTraces(layers, weights, biases)
            for _ in range(phase.steps):
                t = t_index[k]
                lam = lam_table[t]
                # u for every layer from the previous step's spikes (synchronous update).
                inputs = []
                for i, layer in enumerate(layers):
                    if i == 0:
                        u = drives_in[k] if spike_input else np.zeros_like(layer.v)
                    else:
                        u = layers[i - 1].q @ weights[i]
                    if i + 1 < len(layers):
                        u = u + layers[i + 1].q @ weights[i + 1].T
                    inputs.append(u)
                for i, (layer, u) in enumerate(zip(layers, inputs, strict=True)):
                    layer.v = u if options.predictive is None else predictive_decode(layer.v, u, lam)
                    pressure = layer.v + offsets[i]  # ρ'(s) = 1 on clipped states (ALGORITHMS.md §1.1)
                    if phase.target is not None and i == len(layers) - 1:
                        pressure = pressure + nudge_force(layer.s, phase.target, phase.beta)
                    eps = eps_table[t] if steppers is None else steppers[i].step(pressure)
                    layer.s = spiking_state_step(layer.s, pressure, eps)
                    layer.q = encoders[i](layer.s, layer, lam)  # ρ(s) = s on clipped states
                if k < free_steps:
                    for total, layer in zip(emitted, layers, strict=True):
                        total += layer.q
                if learning:
                    traces.accumulate(layers)
                if observer is not None:
                    observer(k, [layer.s for layer in layers])
                k += 1
            record.phase_states.append([layer.s.copy() for layer in layers])
            if learning:
                first = k - phase.steps
                pre = spikes_in[first:k] if spike_input else np.broadcast_to(x, (phase.steps, *x.shape))
                traces.finish_input_layer(pre)
                record.weight_traces, record.bias_traces = traces.weights, traces.biases
        record.spikes, record.synops = self.count_cost(x, emitted, spikes_in[:free_steps] if spike_input else None)
        return record

    def count_cost(self, x: np.ndarray, emitted: list[np.ndarray],
                   spikes_in: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Spikes and SynOps per image of a free phase (see docs/ALGORITHM_CHOICES.md).

        A spike of a non-input layer reaches the next layer and, unless it is the clamped input, the
        previous one. Input spikes reach the first hidden layer; in current mode the input costs one
        operation per non-zero pixel per hidden neuron.
        """
        sizes = self.spec.layers[1:]
        spikes = np.zeros(len(x))
        synops = np.zeros(len(x))
        for i, total in enumerate(emitted):
            per_image = total.sum(axis=1, dtype=np.float64)
            fan_out = (sizes[i + 1] if i + 1 < len(sizes) else 0) + (sizes[i - 1] if i > 0 else 0)
            spikes += per_image
            synops += per_image * fan_out
        if spikes_in is not None:
            per_image = spikes_in.sum(axis=(0, 2), dtype=np.float64)
            spikes += per_image
            synops += per_image * sizes[0]
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
