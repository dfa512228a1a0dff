"""Continuous-valued Equilibrium Propagation (Scellier & Bengio, as O'Connor uses it).

States of all non-input layers are updated synchronously from the previous step ([000] Eq. 3 as printed,
authors' code ``prop_direction='neutral'``). The clamped input's drive ``xᵀW₀`` is computed once per batch.
"""

from __future__ import annotations

import numpy as np

from poise.golden.equations import (
    continuous_step,
    contrastive_bias_update,
    contrastive_weight_update,
    nudge_force,
    rho,
)
from poise.golden.model import EqPropModel, Result, register_model


def layer_inputs(
    states: list[np.ndarray],
    input_drive: np.ndarray,
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    feedback: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Net input of every non-input layer: bias + drive from below + drive from above.

    ``input_drive`` is the bottom layer's drive from the clamped input (xᵀW₀, or its spike-decoded form).
    The drive from above goes through ``feedback[l]`` (n_{l+2} × n_{l+1}) when given ([004] untied
    weights), else through the transposed feed-forward weight (symmetric EqProp).
    """
    rates = states  # ρ(s) = s on clipped states (ALGORITHMS.md §1.1)
    nets = []
    for layer, _ in enumerate(states):
        below = input_drive if layer == 0 else rates[layer - 1] @ weights[layer]
        net = below + biases[layer]
        if layer + 1 < len(states):
            back = weights[layer + 1].T if feedback is None else feedback[layer]
            net = net + rates[layer + 1] @ back
        nets.append(net)
    return nets


def contrastive_update(
    model: EqPropModel, x: np.ndarray, minus: list[np.ndarray], plus: list[np.ndarray], beta: float
) -> None:
    """Apply [001] Eq. 2.12/2.13 to every layer, with per-layer rates; x stands in for the input's ρ."""
    rates_minus = [x, *(rho(s) for s in minus)]
    rates_plus = [x, *(rho(s) for s in plus)]
    for layer, rate in enumerate(model.spec.learning_rates):
        scale = rate / beta
        model.params[f"w{layer}"] += contrastive_weight_update(
            rates_plus[layer], rates_plus[layer + 1], rates_minus[layer], rates_minus[layer + 1], scale
        )
        model.params[f"b{layer}"] += contrastive_bias_update(rates_plus[layer + 1], rates_minus[layer + 1], scale)


@register_model("continuous")
class ContinuousEqProp(EqPropModel):
    """Eq. 3 dynamics with clipped states, a free phase, a nudged phase and the Eq. 2.12 update."""

    #: The nudge is ``nudge_force(s, y, nudge_scale·β)`` = 2·nudge_scale·β(y − s); 1 for [001]'s C = ‖y − s‖².
    nudge_scale = 1.0

    def layer_inputs(self, states: list[np.ndarray], input_drive: np.ndarray) -> list[np.ndarray]:
        """Net input of every non-input layer under the current parameters (symmetric weights)."""
        return layer_inputs(states, input_drive, self.weights, self.biases)

    def zero_states(self, batch: int) -> list[np.ndarray]:
        """Fresh states for every minibatch: no persistent particles ([000] §4.2), zeros (code default)."""
        return [np.zeros((batch, n), np.float32) for n in self.spec.layers[1:]]

    def relax(
        self,
        states: list[np.ndarray],
        input_drive: np.ndarray,
        steps: int,
        target: np.ndarray | None = None,
        beta: float = 0.0,
    ) -> list[np.ndarray]:
        """Run ``steps`` synchronous Eq. 3 steps with the ε schedule (t = 1 … steps); with a target, nudge
        the outputs by ``nudge_force`` (see ``nudge_scale``)."""
        for epsilon in self.spec.epsilon.table(steps):
            # ρ'(s) = 1 on clipped states, so the drive is the net input itself.
            drives = self.layer_inputs(states, input_drive)
            if target is not None:
                drives[-1] = drives[-1] + nudge_force(states[-1], target, self.nudge_scale * beta)
            states = [continuous_step(s, d, epsilon) for s, d in zip(states, drives, strict=True)]
        return states

    def infer(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Result:
        states = self.relax(self.zero_states(len(x)), x @ self.weights[0], self.spec.steps_free)
        zeros = np.zeros(len(x))
        return Result(states[-1], zeros, zeros)

    def phases(
        self, x: np.ndarray, labels: np.ndarray, beta: float
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Free fixed point s⁻ from zero states, then the nudged fixed point s⁺ started from s⁻."""
        drive = x @ self.weights[0]
        free = self.relax(self.zero_states(len(x)), drive, self.spec.steps_free)
        nudged = self.relax(free, drive, self.spec.steps_nudge, self.one_hot(labels), beta)
        return free, nudged

    def learn(self, x: np.ndarray, free: list[np.ndarray], nudged: list[np.ndarray], beta: float) -> None:
        """Update the parameters from the two phases: the contrastive rule of [001] Eq. 2.12/2.13."""
        contrastive_update(self, x, free, nudged, beta)

    def train_batch(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Result:
        beta = self.beta_for_batch(rng)
        free, nudged = self.phases(x, labels, beta)
        self.learn(x, free, nudged, beta)
        zeros = np.zeros(len(x))
        return Result(free[-1], zeros, zeros)
