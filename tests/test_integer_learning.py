"""On-chip learning in the integer golden model: the spike-triggered rule as read-modify-writes of the
accumulate pass, with LFSR-driven stochastic rounding (docs/FIXED_POINT.md "On-chip learning")."""

import dataclasses

import numpy as np
import pytest

from poise.golden.fixed import (
    LFSR_TAPS,
    LFSR_WIDTH,
    FixedPointSpec,
    Lfsr,
    derive_fixed_spec,
    lfsr_words_reference,
)
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.spec import SpikingOptions, default_spec
from poise.golden.spiking import Phase
from poise.golden.train import as_input


def small_spec(mode="current", hidden=32, **changes):
    spec = default_spec("spiking", (784, hidden, 10)).replace(steps_free=40, steps_nudge=20, **changes)
    return spec.replace(spiking=SpikingOptions(input_mode=mode, rule="spike_triggered"))


def fresh_model(spec, **fixed_options):
    params = build_model(spec).params
    fixed = derive_fixed_spec(spec, params, learning=True, **fixed_options)
    return IntegerSpikingModel.from_float(spec, params, fixed)


def parameters(model):
    return [w.copy() for w in model.weights] + [b.copy() for b in model.biases]


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))


def gf2_power(columns, exponent):
    """The GF(2) matrix (32 column bitmasks) raised to ``exponent``."""
    def apply(matrix, vector):
        out = 0
        for bit, column in enumerate(matrix):
            if vector >> bit & 1:
                out ^= column
        return out

    result = [1 << bit for bit in range(LFSR_WIDTH)]
    while exponent:
        if exponent & 1:
            result = [apply(columns, column) for column in result]
        columns = [apply(columns, column) for column in columns]
        exponent >>= 1
    return result


def test_lfsr_is_maximal_length_and_the_vectorised_stream_is_bit_serial():
    step = [(1 << bit >> 1) ^ (LFSR_TAPS if bit == 0 else 0) for bit in range(LFSR_WIDTH)]
    identity = [1 << bit for bit in range(LFSR_WIDTH)]
    period = (1 << LFSR_WIDTH) - 1
    assert gf2_power(step, period) == identity
    for prime in (3, 5, 17, 257, 65537):  # 2^32 − 1 = 3·5·17·257·65537: no shorter cycle
        assert gf2_power(step, period // prime) != identity
    lfsr = Lfsr(8, seed=0xACE1)
    drawn = np.concatenate([lfsr.words(7), lfsr.words(5000)])  # crosses a jump-table block
    expected, state = lfsr_words_reference(0xACE1, 8, 5007)
    np.testing.assert_array_equal(drawn, expected)
    assert lfsr.state == state
    assert abs(drawn.mean() - 127.5) < 3  # uniform words: unbiased stochastic rounding


def test_integer_update_points_like_the_float_spike_triggered_update(mnist):
    spec = small_spec()
    model = fresh_model(spec)
    nearest = IntegerSpikingModel(spec, dataclasses.replace(model.fixed, learn_rounding="nearest"),
                                  model.weights, model.biases)
    for index in (0, 1):
        reference = build_model(spec, model.dequantised())  # the same weights as the integer model now
        image, label = mnist.train_images[index], int(mnist.train_labels[index])
        phases = [Phase(spec.steps_free), Phase(spec.steps_nudge, reference.one_hot(np.array([label])), spec.beta)]
        record = reference.run(as_input(image[np.newaxis]), phases, learn_traces=True)
        before = parameters(model)
        model.train_image(image, label, beta_sign=1)
        floats = record.weight_traces + record.bias_traces
        for old, new, update in zip(before, parameters(model), floats, strict=True):
            assert cosine(new - old, update) > 0.7
        if index == 0:  # same weights: nearest rounding loses the whole W1 update (η·Δs < ½ LSB)
            old_w1 = nearest.weights[1].copy()
            nearest.train_image(image, label, beta_sign=1)
            assert np.array_equal(nearest.weights[1], old_w1) and not np.array_equal(model.weights[1], old_w1)


@pytest.mark.parametrize("mode", ["spike", "current"])
def test_training_is_deterministic_given_the_lfsr_seed(mnist, mode):
    spec = small_spec(mode, hidden=16)
    first, second, reseeded = (fresh_model(spec) for _ in range(3))
    reseeded.lfsr = Lfsr(reseeded.fixed.guard, seed=0x1234567)
    images, labels = mnist.train_images[:3], mnist.train_labels[:3]
    outcomes = [model.train(images, labels) for model in (first, second, reseeded)]
    np.testing.assert_array_equal(outcomes[0], outcomes[1])
    for a, b in zip(parameters(first), parameters(second), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.lfsr.state == second.lfsr.state != reseeded.lfsr.state
    assert any(not np.array_equal(a, b) for a, b in zip(parameters(first), parameters(reseeded), strict=True))
    # the trained weights are what inference uses
    np.testing.assert_array_equal(first.infer(images[:1]).outputs, second.infer(images[:1]).outputs)


def test_learned_weights_saturate_inside_their_formats(mnist):
    spec = small_spec(hidden=16, learning_rates=(20.0, 10.0))  # huge steps: weights hit their limits
    model = fresh_model(spec, weight_bits=5)
    model.train(mnist.train_images[:4], mnist.train_labels[:4])
    fixed = model.fixed
    assert all(fixed.weight.contains(w).all() for w in model.weights)
    assert all(fixed.bias.contains(b).all() for b in model.biases)
    counts = model.learn_saturations["saturations"]
    assert counts["w"] > 0 and counts["b"] > 0
    assert any((w == fixed.weight.max_raw).any() or (w == fixed.weight.min_raw).any() for w in model.weights)
    assert FixedPointSpec.from_dict(fixed.to_dict()) == fixed  # the learning constants ride in the spec


def test_on_chip_training_learns_mnist(mnist):
    spec = small_spec()
    model = fresh_model(spec)
    test_images, test_labels = mnist.test_images[:300], mnist.test_labels[:300]
    before = (model.infer(test_images).predictions == test_labels).mean()
    model.train(mnist.train_images[:750], mnist.train_labels[:750])
    after = (model.infer(test_images).predictions == test_labels).mean()
    assert before < 0.2 and after > 0.3 and after - before > 0.2, (before, after)
    counts = model.learn_saturations["saturations"]
    assert counts.get("u", 0) == counts.get("v", 0) == counts.get("p", 0) == 0  # sized for any learned weights
