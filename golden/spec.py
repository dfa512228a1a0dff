"""The network specification: one object that states every number of a model, once.

A :class:`NetworkSpec` drives the golden models, the training loop and (later) the RTL generator. It is
stored as JSON inside every model bundle, so a bundle says exactly how it was trained and how it runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from poise.errors import PoiseError

ModelKind = Literal["continuous", "spiking", "eqspike", "asymmetric"]
MODEL_KINDS: tuple[str, ...] = ("continuous", "spiking", "eqspike", "asymmetric")


@dataclass(frozen=True)
class Schedule:
    """A step-size or predictive-coding schedule indexed by the 1-based step counter t.

    ``kind``:
    - ``"constant"``: ``value`` at every step;
    - ``"power"``: ``value / t**exponent`` (O'Connor Eq. 7 / Eq. 10 form);
    - ``"osa"``: George & Powell's Optimal Step-size Algorithm (thesis App. E.1), per neuron, with target
      ``osa_target`` (ν̄). Only meaningful for ε; ``table`` is not defined for it.
    """

    kind: Literal["constant", "power", "osa"] = "constant"
    value: float = 0.5
    exponent: float = 0.0
    osa_target: float = 0.0346

    def table(self, steps: int) -> np.ndarray:
        """Return the schedule for t = 1..steps as float32 (shape ``(steps,)``)."""
        t = np.arange(1, steps + 1, dtype=np.float64)
        if self.kind == "constant":
            return np.full(steps, self.value, dtype=np.float32)
        if self.kind == "power":
            return (self.value / t**self.exponent).astype(np.float32)
        raise ValueError("an OSA schedule adapts per neuron and has no fixed table")

    def describe(self) -> str:
        if self.kind == "constant":
            return f"{self.value:g}"
        if self.kind == "power":
            return f"{self.value:g}/t^{self.exponent:g}"
        return f"OSA(nu={self.osa_target:g})"

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse ``0.5``, ``0.843/t^0.0923`` or ``osa:0.0346``."""
        text = text.strip().replace("**", "^")
        try:
            if text.startswith("osa"):
                _, _, target = text.partition(":")
                return cls(kind="osa", osa_target=float(target) if target else 0.0346)
            if "/t^" in text:
                value, _, exponent = text.partition("/t^")
                return cls(kind="power", value=float(value), exponent=float(exponent))
            return cls(kind="constant", value=float(text))
        except ValueError:
            raise PoiseError(
                f"cannot read schedule {text!r}: write a constant (0.5), a power law (0.843/t^0.0923) "
                "or osa:NU (osa:0.0346)"
            ) from None


@dataclass(frozen=True)
class SpikingOptions:
    """Options of O'Connor's binary network (Eq. 14) and its spike-triggered learning rule.

    - ``encoder``: ``sigma_delta`` (Eq. 11), ``stochastic`` (Eq. 8, ``q = [a > U(0,1)]``) or ``identity``
      (no quantisation, q = a: the real-valued limit used to check Eq. 14 against Eq. 3).
    - ``predictive``: the λ schedule of the predictive encoder/decoder (Eqs. 12-13); ``None`` turns
      predictive coding off (identity decoder, ``a = ρ(s)``).
    - ``input_mode``: ``spike`` encodes the clamped pixels like neurons (paper and authors' code);
      ``current`` adds the exact drive ``W1ᵀx`` every step.
    - ``continue_time``: the step counter t runs on across the free/nudged boundary (authors' code);
      when False it restarts at 1 for the nudged phase.
    - ``rule``: ``contrastive`` (thesis Eq. 2.12 on the phase-end states) or ``spike_triggered``
      (EqSpike Eq. 1: a pre-synaptic spike in the nudged phase moves wᵢⱼ by η·(ρⱼ − ρⱼ⁻)).
    """

    encoder: Literal["sigma_delta", "stochastic", "identity"] = "sigma_delta"
    predictive: Schedule | None = field(default_factory=lambda: Schedule("power", 0.832, 0.584))
    input_mode: Literal["spike", "current"] = "spike"
    continue_time: bool = True
    rule: Literal["contrastive", "spike_triggered"] = "contrastive"


@dataclass(frozen=True)
class EqSpikeOptions:
    """Parameters of the EqSpike network (Martin et al. [002]); [002] leaves them all to its unavailable
    Supplementary Information, so every value is our choice (docs/EQSPIKE.md). Time is in steps; rates are
    in units of f_max = 1/refractory_steps.

    - ``leak_lif`` γ_LIF, ``threshold`` u_th: ``u ← (1 − γ_LIF)u + I``, spike when u > u_th, reset by
      subtracting u_th. 1/16 (a shift) keeps the rate close to the hard sigmoid ρ(2I/u_th); u_th = 1 makes
      Glorot-initialised weights give the same pre-activations as continuous EqProp.
    - ``refractory_steps`` T_refract = 2: f_max·dt = 0.5, derived from T_average = 100 steps = 50/f_max.
    - ``floor``, ``ceiling``: the membrane saturates at [floor·u_th, ceiling·u_th], a bounded register that
      also bounds how long past inhibition or excitation is remembered.
    - ``leak_li`` γ_LI = 1/16, ``delay`` τ = 8, ``filter_length`` N_filt = 8: the rate-derivative extractor
      (leaky integrator, delay difference, moving average); powers of two, τ + N_filt and 1/γ_LI short
      against T_nudge so the whole rate change of the nudged phase is seen.
    - ``input_gain`` g: a pixel x drives its input LIF neuron with the constant current g·u_th·x; 0.5 makes
      a white pixel fire near f_max. ``input_phases``: input membranes start at frac(i·φ)·u_th instead of 0,
      so equal pixels do not fire in lockstep.
    - ``target_rate_low``/``target_rate_high`` ρ̂: 0 and 1 (= f_max) for the other outputs and the label's;
      the loss is e = ½‖ρ_o − ρ̂‖² on the output's leaky-integrator rate, clipped to [0, 1].
    - ``nudge_skip``: images whose output rates (N_filt mean at the end of the free phase) are all within
      this of ρ̂ get no nudged phase and no update ([002]'s 1 %); a negative value nudges every image.

    Set in ``default_spec("eqspike")``: T_free = T_nudge = 100 (T_free = [002]'s T_average); β = 0.5,
    positive only (the rule has no 1/β); ``learning_rates`` are [002]'s l_r = η_r·τ/γ_LI per image (η_r is
    derived), 0.006 below the output and 0.0015 for it; batch 1. Weights are Glorot, biases 0; the free phase
    does not learn.
    """

    leak_lif: float = 0.0625
    threshold: float = 1.0
    refractory_steps: int = 2
    floor: float = -1.0
    ceiling: float = 2.0
    leak_li: float = 0.0625
    delay: int = 8
    filter_length: int = 8
    input_gain: float = 0.5
    input_phases: bool = True
    target_rate_low: float = 0.0
    target_rate_high: float = 1.0
    nudge_skip: float = 0.01


@dataclass(frozen=True)
class AsymmetricOptions:
    """Options of general-dynamics EqProp (Scellier et al. 2018) with untied feedback weights.

    - ``feedback_init``: feedback weights drawn ``independent`` Glorot-uniform, or the ``transpose`` of
      the feed-forward weights (tied at the start).
    - ``train_biases``: learn the biases by Eq. 56 with ∂μ/∂b = 1; when False they stay at zero, as in
      the paper, whose field has no bias.
    """

    feedback_init: Literal["independent", "transpose"] = "independent"
    train_biases: bool = True


@dataclass(frozen=True)
class NetworkSpec:
    """Everything that defines a layered EqProp network and how it is trained.

    ``layers`` counts neurons per layer, input first (``784, 500, 10``). Weight layer ``l`` connects
    layer ``l`` to layer ``l + 1`` and has learning rate ``learning_rates[l]`` in the first epoch, times
    ``learning_rate_decay`` for every later epoch (1 keeps the rates constant, as in the papers).
    """

    model: ModelKind = "continuous"
    layers: tuple[int, ...] = (784, 500, 10)
    steps_free: int = 20
    steps_nudge: int = 4
    epsilon: Schedule = field(default_factory=lambda: Schedule("constant", 0.5))
    beta: float = 0.5
    random_beta_sign: bool = True
    learning_rates: tuple[float, ...] = (0.1, 0.05)
    batch_size: int = 20
    seed: int = 0
    learning_rate_decay: float = 1.0
    spiking: SpikingOptions | None = None
    eqspike: EqSpikeOptions | None = None
    asymmetric: AsymmetricOptions | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise PoiseError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_KINDS)}")
        if len(self.layers) < 2 or any(n < 1 for n in self.layers):
            raise PoiseError(f"architecture {self.arch} needs at least an input and an output layer")
        if len(self.learning_rates) != len(self.layers) - 1:
            raise PoiseError(
                f"architecture {self.arch} has {len(self.layers) - 1} weight layers but "
                f"{len(self.learning_rates)} learning rates were given"
            )
        if self.steps_free < 1 or self.steps_nudge < 0 or self.batch_size < 1:
            raise PoiseError("steps_free and batch_size must be positive, steps_nudge non-negative")
        if self.seed < 0:
            raise PoiseError(f"seed {self.seed} is negative; random generators need a seed >= 0")
        if not 0 < self.learning_rate_decay <= 1:
            raise PoiseError(f"learning-rate decay {self.learning_rate_decay} must lie in (0, 1]")

    @property
    def arch(self) -> str:
        return "-".join(str(n) for n in self.layers)

    @property
    def weight_shapes(self) -> list[tuple[int, int]]:
        return [(self.layers[i], self.layers[i + 1]) for i in range(len(self.layers) - 1)]

    def replace(self, **changes: Any) -> NetworkSpec:
        return dataclasses.replace(self, **changes)

    def for_epoch(self, epoch: int) -> NetworkSpec:
        """The spec that trains epoch ``epoch`` (1-based): learning rates × decay^(epoch − 1)."""
        if self.learning_rate_decay == 1:
            return self
        factor = self.learning_rate_decay ** (epoch - 1)
        return self.replace(learning_rates=tuple(rate * factor for rate in self.learning_rates))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        """Rebuild a spec from :meth:`to_dict` output; unknown keys are an error."""
        data = dict(data)
        try:
            for key, kind in (("spiking", SpikingOptions), ("eqspike", EqSpikeOptions),
                              ("asymmetric", AsymmetricOptions)):
                if data.get(key) is not None:
                    options = dict(data[key])
                    if key == "spiking" and options.get("predictive") is not None:
                        options["predictive"] = Schedule(**options["predictive"])
                    data[key] = kind(**options)
            data["epsilon"] = Schedule(**data["epsilon"])
            data["layers"] = tuple(data["layers"])
            data["learning_rates"] = tuple(data["learning_rates"])
            return cls(**data)
        except (TypeError, KeyError) as error:
            raise PoiseError(f"the network spec is malformed: {error}") from None


def parse_arch(text: str) -> tuple[int, ...]:
    """Parse ``784-500-10`` into ``(784, 500, 10)``."""
    try:
        layers = tuple(int(part) for part in text.split("-"))
    except ValueError:
        raise PoiseError(f"cannot read architecture {text!r}: write layer sizes like 784-500-10") from None
    if len(layers) < 2 or min(layers) < 1:
        raise PoiseError(f"architecture {text!r} needs at least two positive layer sizes")
    return layers


def default_spec(model: ModelKind, layers: tuple[int, ...] = (784, 500, 10)) -> NetworkSpec:
    """The paper-faithful defaults for each model kind (see docs/ALGORITHM_CHOICES.md).

    Learning rates per weight layer follow the authors' code for one hidden layer (0.1, 0.05); deeper
    networks divide by 4 per layer towards the output, as in Scellier & Bengio's 3-hidden-layer setup.
    """
    n_weights = len(layers) - 1
    rates = tuple(0.1 / 4**i if n_weights > 2 else (0.1, 0.05)[min(i, 1)] for i in range(n_weights))
    if model == "continuous":
        return NetworkSpec(model=model, layers=layers, learning_rates=rates)
    if model == "spiking":
        return NetworkSpec(
            model=model, layers=layers, steps_free=100, steps_nudge=50,
            epsilon=Schedule("power", 0.843, 0.0923), learning_rates=rates, spiking=SpikingOptions(),
        )
    if model == "eqspike":
        # l_r per image (updates are summed over a batch): 0.006 for the layers below the output, 0.0015
        # for the output layer; batch 1, positive β, T_free = T_nudge = 100 steps (docs/EQSPIKE.md).
        return NetworkSpec(
            model=model, layers=layers, steps_free=100, steps_nudge=100, beta=0.5, random_beta_sign=False,
            learning_rates=tuple(0.006 if i + 1 < n_weights else 0.0015 for i in range(n_weights)),
            batch_size=1, eqspike=EqSpikeOptions(),
        )
    # [004]'s nudge is β(y − h), half of [001]'s 2β(y − s): twice the symmetric rates give the same step
    # (measured: 784-64-10, 3000 images, 69 % instead of 45 % test accuracy; docs/ASYMMETRIC.md).
    return NetworkSpec(
        model=model, layers=layers, steps_free=200, steps_nudge=100, epsilon=Schedule("constant", 0.5),
        beta=1.0, random_beta_sign=False, learning_rates=tuple(2 * rate for rate in rates),
        asymmetric=AsymmetricOptions(),
    )
