"""Where the core keeps every weight and per-neuron word: the memory map shared by the RTL generator, the
Verilog memory images and the testbenches."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from poise.errors import PoiseError
from poise.golden.fixed import FixedPointSpec
from poise.golden.spec import NetworkSpec


def _signed_bits(magnitude: int) -> int:
    """Width of a signed word holding ±magnitude."""
    return int(magnitude).bit_length() + 1


@dataclass(frozen=True)
class CoreGeometry:
    """The memory map of a :class:`~poise.rtl.core.NetworkCore` with ``lanes`` = P synapse lanes.

    **Weights.** Weight matrix W_l (layer l → l + 1, shape n_l × n_{l+1}) lives in P banks, one weight per
    word. Row i occupies ``words[l]`` = ⌈n_{l+1}/P⌉ consecutive addresses ``i·words[l] + j // P`` in every
    bank, weight (i, j) in bank ``(j + i) mod P`` when the matrix is *skewed*, else ``j mod P``. Skewed
    matrices (l ≥ 1, read by row for pre-synaptic spikes and by column for post-synaptic ones) give any P
    consecutive weights of a row *or* of a column distinct banks, so both reads take one cycle per P
    weights. W₀ is only ever read by row (the input is clamped), so its banks share one address and can be
    one wide memory (:func:`~poise.rtl.single_port.single_port_banks`).

    **Neurons.** Per-neuron words the synapse lanes touch (the accumulator u, the learning increments, the
    current-mode drive and Δs sum) are banked like a row: neuron j of non-input layer m (0-based, so layer
    m + 1 of the network) in bank ``j mod P`` at address ``neuron_base[m] + j // P``.
    """

    spec: NetworkSpec
    fixed: FixedPointSpec
    lanes: int

    def __post_init__(self) -> None:
        if self.lanes < 1 or self.lanes & (self.lanes - 1):
            raise PoiseError(f"the number of synapse lanes must be a power of two, not {self.lanes}")

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.spec.layers)

    @property
    def matrices(self) -> int:
        return len(self.layers) - 1

    @property
    def spike_input(self) -> bool:
        return self.spec.spiking is not None and self.spec.spiking.input_mode == "spike"

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        """Sizes of the non-input layers (spans), first hidden first."""
        return self.layers[1:]

    @cached_property
    def span_start(self) -> tuple[int, ...]:
        """Global index of each span's first neuron (non-input neurons are numbered 0..N−1)."""
        return tuple(int(v) for v in np.cumsum((0, *self.sizes[:-1])))

    @property
    def neurons(self) -> int:
        return sum(self.sizes)

    def words(self, layer: int) -> int:
        """Words per row of W_layer in each bank: ⌈n_{layer+1}/P⌉."""
        return -(-self.layers[layer + 1] // self.lanes)

    def skewed(self, layer: int) -> bool:
        return layer >= 1

    def bank_depth(self, layer: int) -> int:
        return self.layers[layer] * self.words(layer)

    @cached_property
    def neuron_base(self) -> tuple[int, ...]:
        """Address of each span's first neuron in the neuron banks."""
        widths = [-(-n // self.lanes) for n in self.sizes]
        return tuple(int(v) for v in np.cumsum((0, *widths[:-1])))

    @property
    def neuron_depth(self) -> int:
        return self.neuron_base[-1] + -(-self.sizes[-1] // self.lanes)

    @cached_property
    def accumulator_bits(self) -> int:
        """Width of the u words: the exact sum of any spikes with any weights of the format (u saturates to the
        spec's accumulator format only when the neuron reads it, as the golden model does)."""
        layers, largest = self.layers, 1 << (self.fixed.weight.width - 1)
        fan_in = max((layers[m] if m > 0 or self.spike_input else 0) + (layers[m + 2] if m + 2 < len(layers) else 0)
                     for m in range(len(layers) - 1))
        return max(_signed_bits(fan_in * largest), self.fixed.accumulator.width)

    @cached_property
    def drive_bits(self) -> int:
        """Width of the current-mode drive Σᵢ wᵢⱼ·pixelᵢ before its rounding."""
        return _signed_bits(self.layers[0] * (1 << (self.fixed.weight.width - 1)) * 255)

    @cached_property
    def summed_bits(self) -> int:
        """Width of the current-mode Σₜ Δs of a first-layer neuron over a nudged phase."""
        return _signed_bits(self.fixed.state.one * max(self.spec.steps_nudge, 1))

    def weight_location(self, layer: int, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bank, address) of weights (row, col) of W_layer."""
        rotation = row if self.skewed(layer) else 0
        return (col + rotation) % self.lanes, row * self.words(layer) + col // self.lanes

    def weight_banks(self, layer: int, weights: np.ndarray) -> np.ndarray:
        """The bank images of raw weights W_layer: (lanes, bank_depth) int64, zero in unused words."""
        weights = np.asarray(weights, np.int64)
        if weights.shape != (self.layers[layer], self.layers[layer + 1]):
            raise PoiseError(f"W{layer} has shape {weights.shape}, the network needs "
                             f"{(self.layers[layer], self.layers[layer + 1])}")
        banks = np.zeros((self.lanes, self.bank_depth(layer)), np.int64)
        rows, cols = np.indices(weights.shape)
        bank, address = self.weight_location(layer, rows, cols)
        banks[bank, address] = weights
        return banks

    def unpack_weights(self, layer: int, banks: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`weight_banks`."""
        rows, cols = np.indices((self.layers[layer], self.layers[layer + 1]))
        bank, address = self.weight_location(layer, rows, cols)
        return np.asarray(banks, np.int64)[bank, address]
