"""What every golden model provides, and the registry that builds one from a spec.

A model owns its parameters as a dict of float32 arrays (``w0``, ``b0``, ``w1``, … and model-specific
extras such as ``f0`` feedback weights) so that bundles can store any model the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from poise.errors import PoiseError
from poise.golden.equations import glorot_uniform
from poise.golden.spec import NetworkSpec


@dataclass
class Result:
    """What a forward (free) phase returns for a batch.

    ``outputs`` are the output-layer states at the end of the free phase, shape (B, n_out); the class
    is their argmax. ``spikes`` and ``synops`` are per image (zeros for non-spiking models).
    A SynOp is one spike delivered through one synapse ([002]); in ``current`` input mode the input
    drive counts one operation per non-zero pixel per hidden neuron, once per image.
    """

    outputs: np.ndarray
    spikes: np.ndarray
    synops: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.outputs.argmax(axis=1)


class EqPropModel(ABC):
    """A layered EqProp network: inference (free phase) and one training step on a minibatch."""

    def __init__(self, spec: NetworkSpec, params: dict[str, np.ndarray] | None = None) -> None:
        self.spec = spec
        self.params = params if params is not None else self.initial_params(np.random.default_rng(spec.seed))
        self.check_params(self.params)

    # -- parameters -------------------------------------------------------------------------------
    def initial_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Glorot-uniform weights and zero biases (authors' code defaults)."""
        params: dict[str, np.ndarray] = {}
        for index, (fan_in, fan_out) in enumerate(self.spec.weight_shapes):
            params[f"w{index}"] = glorot_uniform(fan_in, fan_out, rng)
            params[f"b{index}"] = np.zeros(fan_out, np.float32)
        return params

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every parameter array this model expects."""
        shapes: dict[str, tuple[int, ...]] = {}
        for index, (fan_in, fan_out) in enumerate(self.spec.weight_shapes):
            shapes[f"w{index}"] = (fan_in, fan_out)
            shapes[f"b{index}"] = (fan_out,)
        return shapes

    def check_params(self, params: dict[str, np.ndarray]) -> None:
        expected = self.param_shapes()
        if set(params) != set(expected):
            raise PoiseError(
                f"parameter arrays {sorted(params)} do not match the {self.spec.model} model "
                f"{self.spec.arch}, which needs {sorted(expected)}"
            )
        for name, shape in expected.items():
            if tuple(params[name].shape) != shape:
                raise PoiseError(
                    f"parameter {name} has shape {tuple(params[name].shape)}, but the {self.spec.arch} "
                    f"network needs {shape}"
                )

    @property
    def weights(self) -> list[np.ndarray]:
        return [self.params[f"w{i}"] for i in range(len(self.spec.layers) - 1)]

    @property
    def biases(self) -> list[np.ndarray]:
        return [self.params[f"b{i}"] for i in range(len(self.spec.layers) - 1)]

    def beta_for_batch(self, rng: np.random.Generator) -> float:
        """β for one minibatch: with the sign trick ([001] §7.4) a random sign, else +β."""
        if self.spec.random_beta_sign and rng.random() < 0.5:
            return -self.spec.beta
        return self.spec.beta

    def one_hot(self, labels: np.ndarray) -> np.ndarray:
        target = np.zeros((len(labels), self.spec.layers[-1]), np.float32)
        target[np.arange(len(labels)), labels] = 1.0
        return target

    # -- behaviour --------------------------------------------------------------------------------
    @abstractmethod
    def infer(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Result:
        """Run the free phase on a batch ``x`` (float32, (B, n_in), pixels in [0, 1])."""

    @abstractmethod
    def train_batch(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Result:
        """Free phase, nudged phase and one parameter update; returns the free-phase result."""


_REGISTRY: dict[str, Callable[[NetworkSpec, dict[str, np.ndarray] | None], EqPropModel]] = {}


def register_model(kind: str) -> Callable[[type[EqPropModel]], type[EqPropModel]]:
    """Class decorator: make ``build_model`` construct this class for ``spec.model == kind``."""

    def decorate(cls: type[EqPropModel]) -> type[EqPropModel]:
        _REGISTRY[kind] = cls
        return cls

    return decorate


def build_model(spec: NetworkSpec, params: dict[str, np.ndarray] | None = None) -> EqPropModel:
    """Construct the golden model that ``spec.model`` names, with fresh or given parameters."""
    # Importing the implementations registers them.
    from poise.golden import asymmetric, continuous, eqspike, spiking  # noqa: F401

    try:
        factory = _REGISTRY[spec.model]
    except KeyError:
        raise PoiseError(f"no golden model is registered for {spec.model!r}") from None
    return factory(spec, params)
