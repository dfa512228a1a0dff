"""The per-neuron reference of the RTL's neuron update against the integer model, register by register."""

import numpy as np
import pytest
from neuron_vectors import small_model

from poise.golden.integer import IntegerSpikingModel
from poise.golden.neuron_ref import OUTPUTS, input_fields, neuron_update, trace_updates


def assert_replays(model: IntegerSpikingModel, pixels: np.ndarray, label: int, beta_sign: int) -> None:
    trace = model.trace(pixels, label, beta_sign)
    inputs, expected = trace_updates(model, trace, pixels, label, beta_sign)
    got = neuron_update(model.fixed, inputs)
    n = trace.registers["s"].shape[1]
    assert sorted(inputs) == sorted(input_fields(model.fixed))
    assert expected["q"].sum() > 0 and inputs["nudge"].sum() == model.spec.steps_nudge * model.spec.layers[-1]
    for name in OUTPUTS:
        bad = np.flatnonzero(got[name] != expected[name])
        assert bad.size == 0, f"{name}: {bad.size} updates differ, first at step {bad[0] // n} neuron " \
                              f"{bad[0] % n}: reference {got[name][bad[0]]}, integer model {expected[name][bad[0]]}"


@pytest.mark.parametrize(("mode", "predictive", "beta_sign"),
                         [("spike", True, 1), ("current", True, -1), ("current", False, 1)])
def test_reference_replays_a_traced_mnist_image(mnist, mode, predictive, beta_sign):
    model = small_model(mode, predictive)
    assert_replays(model, mnist.test_images[0], int(mnist.test_labels[0]), beta_sign)


def test_replay_detects_a_wrong_register(mnist):
    model = small_model("current")
    pixels, label = mnist.test_images[1], int(mnist.test_labels[1])
    trace = model.trace(pixels, label)
    inputs, expected = trace_updates(model, trace, pixels, label)
    inputs["rho_prev"] = inputs["s"] + (np.arange(inputs["s"].size) % 7 == 3)  # one LSB off now and then
    got = neuron_update(model.fixed, inputs)
    assert np.any(got["a"] != expected["a"])


def test_nudge_sign_and_flag():
    model = small_model("current")
    fixed = model.fixed
    base = {name: np.zeros(4, np.int64) for name in input_fields(fixed)}
    base.update(epsilon=np.full(4, fixed.epsilon_format.one), lam=np.full(4, fixed.lambda_format.one),
                inv_lam=np.full(4, fixed.inv_lambda_format.one), y=np.ones(4, np.int64),
                nudge=np.array([0, 1, 1, 1]), beta_negative=np.array([0, 0, 1, 1]))
    base["s"] = np.array([0, 0, 0, fixed.state.one])
    p = neuron_update(fixed, base)["p"]
    one = fixed.state.one * fixed.two_beta >> fixed.beta_format.frac  # 2|β|·(1 − 0)
    np.testing.assert_array_equal(p, [0, one, -one, 0])
