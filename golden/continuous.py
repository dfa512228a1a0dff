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
    states: list[np.ndarray], input_drive: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray]
) -> list[np.ndarray]:
    """Net input of every non-input layer: bias + drive from below + drive from above (symmetric w).

    ``input_drive`` is the bottom layer's drive from the clamped input (xᵀW₀, or its spike-decoded form).
    """
    rates = states  # ρ(s) = s on clipped states (ALGORITHMS.md §1.1)
    nets = []
    for layer, _ in enumerate(states):
        below = input_drive if layer == 0 else rates[layer - 1] @ weights[layer]
        net = below + biases[layer]
        if layer + 1 < len(states):
            net = net + rates[layer + 1] @ weights[layer + 1].T
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
        """Run ``steps`` synchronous Eq. 3 steps; with a target, nudge the outputs by 2β(y − s)."""
        epsilon = self.spec.epsilon.table(1)[0]
        weights, biases = self.weights, self.biases
        for _ in range(steps):
            # ρ'(s) = 1 on clipped states, so the drive is the net input itself.
            drives = layer_inputs(states, input_drive, weights, biases)
            if target is not None:
                drives[-1] = drives[-1] + nudge_force(states[-1], target, beta)
            states = [continuous_step(s, d, epsilon) for s, d in zip(states, drives, strict=True)]
        return states

    def infer(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Result:
        states = self.relax(self.zero_states(len(x)), x @ self.weights[0], self.spec.steps_free)
        zeros = np.zeros(len(x))
        return Result(states[-1], zeros, zeros)

    def train_batch(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Result:
        beta = self.beta_for_batch(rng)
        drive = x @ self.weights[0]
        minus = self.relax(self.zero_states(len(x)), drive, self.spec.steps_free)
        plus = self.relax(minus, drive, self.spec.steps_nudge, self.one_hot(labels), beta)
        contrastive_update(self, x, minus, plus, beta)
        zeros = np.zeros(len(x))
        return Result(minus[-1], zeros, zeros)
