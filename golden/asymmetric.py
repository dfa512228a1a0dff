"""General-dynamics Equilibrium Propagation with untied feed-forward and feedback weights ([004]).

Every non-input layer l is a leaky integrator driven from below by the feed-forward weights ``w{l-1}``
(n_{l-1} × n_l) and from above by its own feedback weights ``f{l}`` (n_{l+1} × n_l), which are separate
parameters ([004] Eqs. 6-9, generalised to any depth, plus a bias that [004] does not have):

    μ_l = ρ(h_{l−1})·W_{l−1} + ρ(h_{l+1})·F_l + b_{l−1} − h_l,    h ← [h + ε·μ^β]₀¹  ([004] Eq. 59),

with the nudge β(y − h_out) added to the output field in the weakly clamped phase ([004] Eqs. 10-14,
C = ½‖y − h_out‖²). The input is clamped and has no feedback weights. After the free and the weakly
clamped phase one update moves every matrix by its own post-synaptic error times its pre-synaptic
free rate ([004] Eq. 56). States live in [0, 1], where ρ(h) = h. See docs/ASYMMETRIC.md.
"""

from __future__ import annotations

import numpy as np

from poise.errors import PoiseError
from poise.golden.continuous import ContinuousEqProp, layer_inputs
from poise.golden.equations import contrastive_bias_update, general_dynamics_update, glorot_uniform
from poise.golden.model import register_model
from poise.golden.spec import AsymmetricOptions, NetworkSpec


@register_model("asymmetric")
class AsymmetricEqProp(ContinuousEqProp):
    """[004] general dynamics: clipped leaky integrators, free and weakly clamped phase, Eq. 56 update."""

    def __init__(self, spec: NetworkSpec, params: dict[str, np.ndarray] | None = None) -> None:
        self.options = spec.asymmetric or AsymmetricOptions()
        if spec.epsilon.kind == "osa":
            raise PoiseError("the asymmetric model takes a constant or power-law ε, not an OSA schedule")
        super().__init__(spec, params)

    # -- parameters -------------------------------------------------------------------------------
    def initial_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Glorot-uniform w, zero b, and feedback f{l} = independent Glorot draws or w{l}ᵀ (options)."""
        params = super().initial_params(rng)
        for index in range(1, len(self.spec.layers) - 1):
            n_below, n_above = self.spec.weight_shapes[index]
            if self.options.feedback_init == "transpose":
                params[f"f{index}"] = params[f"w{index}"].T.copy()
            else:
                params[f"f{index}"] = glorot_uniform(n_above, n_below, rng)
        return params

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes()
        for index in range(1, len(self.spec.layers) - 1):
            fan_in, fan_out = self.spec.weight_shapes[index]
            shapes[f"f{index}"] = (fan_out, fan_in)
        return shapes

    @property
    def feedback(self) -> list[np.ndarray]:
        """Feedback matrices f1 … f_{L−1}; ``feedback[k]`` carries layer k+2 to layer k+1."""
        return [self.params[f"f{i}"] for i in range(1, len(self.spec.layers) - 1)]

    # -- dynamics ---------------------------------------------------------------------------------
    #: [004]'s cost is C = ½‖y − h‖², so −β∂C/∂h = β(y − h) = ``nudge_force(h, y, β/2)`` ([004] Eq. 14).
    nudge_scale = 0.5

    def layer_inputs(self, states: list[np.ndarray], input_drive: np.ndarray) -> list[np.ndarray]:
        """ρ(h_{l−1})W_{l−1} + ρ(h_{l+1})F_l + b ([004] Eqs. 6-8); μ = net − h, and the clipped step
        h ← [h + ε(net − h)]₀¹ is [004] Eq. 59 as reconstructed (``continuous_step``)."""
        return layer_inputs(states, input_drive, self.weights, self.biases, self.feedback)

    # -- learning ---------------------------------------------------------------------------------
    def updates(
        self, x: np.ndarray, free: list[np.ndarray], nudged: list[np.ndarray], beta: float
    ) -> dict[str, np.ndarray]:
        """[004] Eq. 56 for every parameter: ΔW = α·ρ(h⁰_pre)ᵀ(h^β_post − h⁰_post)/β, batch mean.

        ``learning_rates[l]`` (α_l) serves the pair l ↔ l+1: w{l}, its feedback f{l} and the bias b{l}
        of layer l+1. Biases follow ∂μ/∂b = 1 unless ``train_biases`` is off. x stands in for ρ(input).
        """
        rates = self.spec.learning_rates
        free_all, nudged_all = [x, *free], [x, *nudged]  # ρ(h) = h on clipped states
        deltas: dict[str, np.ndarray] = {}
        for layer, rate in enumerate(rates):
            pre, post = layer, layer + 1
            deltas[f"w{layer}"] = general_dynamics_update(
                free_all[pre], free_all[post], nudged_all[post], rate / beta
            )
            if self.options.train_biases:
                deltas[f"b{layer}"] = contrastive_bias_update(nudged_all[post], free_all[post], rate / beta)
            if layer >= 1:  # f{layer} carries layer post back to layer pre
                deltas[f"f{layer}"] = general_dynamics_update(
                    free_all[post], free_all[pre], nudged_all[pre], rate / beta
                )
        return deltas

    def learn(self, x: np.ndarray, free: list[np.ndarray], nudged: list[np.ndarray], beta: float) -> None:
        for name, delta in self.updates(x, free, nudged, beta).items():
            self.params[name] += delta


def alignment(model: AsymmetricEqProp, *, raw: bool = False) -> list[float]:
    """Alignment of each feed-forward/feedback pair, [004] Fig. 3: tr(W_{k,k+1}·W_{k+1,k}).

    One value per pair that has feedback (layer l ↔ l+1 for l ≥ 1, bottom first): the cosine
    tr(w{l}·f{l}) / (‖w{l}‖_F‖f{l}‖_F) in [−1, 1] (1 means f = c·wᵀ), or with ``raw`` the trace itself.
    """
    values = []
    for index, f in enumerate(model.feedback, start=1):
        w = model.params[f"w{index}"]
        trace = float(np.einsum("ij,ji->", w, f))  # tr(w·f) = Σᵢⱼ wᵢⱼ fⱼᵢ
        values.append(trace if raw else trace / float(np.linalg.norm(w) * np.linalg.norm(f)))
    return values
