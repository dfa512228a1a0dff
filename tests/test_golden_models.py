"""The golden float models against facts that follow from the papers' equations (ALGORITHMS.md V1, V15)."""

import numpy as np
import pytest

from poise.golden.continuous import ContinuousEqProp
from poise.golden.equations import (
    OptimalStepsize,
    osa_nu,
    predictive_decode,
    predictive_encode,
    rho_prime,
    sigma_delta,
)
from poise.golden.model import build_model
from poise.golden.spec import NetworkSpec, Schedule, SpikingOptions, default_spec
from poise.golden.spiking import Encoder, InputTrains, Phase, SpikingEqProp


def test_sigma_delta_error_bound():
    """[000] §3.3: for any xᵗ ∈ (0,1) and φ⁰ = 0, |Σ_{t≤T}(xᵗ − qᵗ)| ≤ ½ for every T."""
    rng = np.random.default_rng(0)
    x = rng.random((1000, 64), dtype=np.float32)  # 64 independent sequences of 1000 steps
    phi = np.zeros(64, np.float32)
    total = np.zeros(64, np.float64)
    worst = 0.0
    for t in range(1000):
        q, phi = sigma_delta(x[t], phi)
        assert set(np.unique(q)) <= {0.0, 1.0}
        total += x[t].astype(np.float64) - q
        worst = max(worst, float(np.abs(total).max()))
    assert worst <= 0.5 + 1e-4
    assert worst > 0.4  # the bound is tight, so the check is not vacuous


def test_predictive_decoder_reconstructs_exactly_without_quantisation():
    """V15(a): with q = a and the same λ at both ends, the decoder returns ρ of the previous step."""
    rng = np.random.default_rng(1)
    lam = np.float64(0.3)
    rho_prev = np.zeros(16)
    v = np.zeros(16)
    for _ in range(50):
        rho_now = rng.random(16)
        a = predictive_encode(rho_now, rho_prev, lam)
        v = predictive_decode(v, a, lam)
        np.testing.assert_allclose(v, rho_now, atol=1e-12)
        rho_prev = rho_now


def test_lambda_one_identity_quantiser_is_eq3_with_one_step_delay():
    """V15(b): λ = 1 and q = a reduce Eq. 14 to Eq. 3 (whose synchronous form has the one-step delay)."""
    rng = np.random.default_rng(2)
    spec = NetworkSpec(
        model="spiking", layers=(12, 9, 5), steps_free=30, epsilon=Schedule("constant", 0.4),
        learning_rates=(0.0, 0.0),
        spiking=SpikingOptions(encoder="identity", predictive=Schedule("constant", 1.0), input_mode="current"),
    )
    params = {"w0": rng.normal(0, 0.5, (12, 9)), "b0": rng.normal(0, 0.2, 9),
              "w1": rng.normal(0, 0.5, (9, 5)), "b1": rng.normal(0, 0.2, 5)}
    params = {k: v.astype(np.float64) for k, v in params.items()}
    x = rng.random((3, 12))
    got = []
    SpikingEqProp(spec, params).run(x, [Phase(30)], observer=lambda k, states: got.append(states))
    # Eq. 3 as printed is synchronous: neuron j sees ρ(sᵢᵗ⁻¹), a one-step delay, exactly like the spikes qᵗ⁻¹.
    reference = ContinuousEqProp(spec.replace(model="continuous"), params)
    states = reference.zero_states(3)
    for step in range(30):
        states = reference.relax(states, x @ params["w0"], 1)
        for mine, theirs in zip(got[step], states, strict=True):
            np.testing.assert_allclose(mine, theirs, atol=1e-12)
    assert np.abs(got[-1][0] - got[0][0]).max() > 0.1  # the trajectory moved: the comparison is not trivial


def test_rho_prime_is_inclusive_and_no_neuron_sticks_at_zero():
    """V15(d): ρ'(0) = ρ'(1) = 1, so a neuron at s = 0 with positive drive rises."""
    s = np.array([-0.1, 0.0, 0.5, 1.0, 1.1], np.float32)
    np.testing.assert_array_equal(rho_prime(s), [0, 1, 1, 1, 0])
    for encoder in ("sigma_delta", "stochastic"):
        spec = default_spec("spiking", (4, 3, 2)).replace(
            spiking=SpikingOptions(encoder=encoder), learning_rates=(0.0, 0.0))
        params = {"w0": np.zeros((4, 3), np.float32), "b0": np.full(3, 0.3, np.float32),
                  "w1": np.zeros((3, 2), np.float32), "b1": np.full(2, 0.6, np.float32)}
        record = SpikingEqProp(spec, params).run(np.zeros((2, 4), np.float32), [Phase(60)],
                                                 np.random.default_rng(0))
        hidden, output = record.phase_states[0]
        np.testing.assert_allclose(hidden, 0.3, atol=0.02)
        np.testing.assert_allclose(output, 0.6, atol=0.02)


def free_loss(model, x, target):
    states = model.relax(model.zero_states(len(x)), x @ model.params["w0"], 300)
    return float(((states[-1] - target) ** 2).sum())


def test_eqprop_update_follows_the_loss_gradient():
    """For small β the contrastive update is −∂C/∂θ at the free fixed point ([001] Eq. 2.11)."""
    rng = np.random.default_rng(3)
    spec = NetworkSpec(layers=(6, 5, 3), steps_free=300, steps_nudge=300, beta=1e-3, random_beta_sign=False,
                       learning_rates=(1.0, 1.0), epsilon=Schedule("constant", 0.5))
    params = {"w0": rng.normal(0, 0.3, (6, 5)), "b0": np.full(5, 0.4),
              "w1": rng.normal(0, 0.3, (5, 3)), "b1": np.full(3, 0.4)}
    model = ContinuousEqProp(spec, {k: v.astype(np.float64) for k, v in params.items()})
    x = rng.random((1, 6))
    labels = np.array([1])
    target = model.one_hot(labels)
    before = {k: v.copy() for k, v in model.params.items()}
    model.train_batch(x, labels, np.random.default_rng(0))
    update = np.concatenate([(model.params[k] - before[k]).ravel() for k in sorted(before)])
    model.params = {k: v.copy() for k, v in before.items()}
    gradient = []
    for name in sorted(before):
        flat = model.params[name].ravel()
        for index in range(flat.size):
            saved = flat[index]
            flat[index] = saved + 1e-5
            up = free_loss(model, x, target)
            flat[index] = saved - 1e-5
            down = free_loss(model, x, target)
            flat[index] = saved
            gradient.append((up - down) / 2e-5)
    gradient = np.array(gradient)
    cosine = update @ -gradient / (np.linalg.norm(update) * np.linalg.norm(gradient))
    assert cosine > 0.9


def test_osa_first_step_takes_the_observation_and_then_averages():
    nu = osa_nu(50, 0.05)
    assert np.all(np.diff(nu) < 0) and nu[-1] > 0.05  # ν decreases towards its target ν̄
    stepper = OptimalStepsize((1, 4), nu)
    alpha = stepper.step(np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(alpha, 1.0)
    rng = np.random.default_rng(4)
    alphas = [stepper.step(1 + 0.5 * rng.standard_normal((1, 4)).astype(np.float32)) for _ in range(40)]
    assert float(np.mean(alphas[-1])) < 0.5  # a noisy stationary signal gets a small step size


@pytest.mark.parametrize("input_mode", ["spike", "current"])
def test_spike_triggered_rule_points_like_the_contrastive_rule(input_mode):
    """EqSpike Eq. 1: summed over the nudged phase, the spike-triggered update estimates Eq. 2.12."""
    rng = np.random.default_rng(5)
    spec = default_spec("spiking", (30, 20, 5)).replace(
        steps_free=150, steps_nudge=150, random_beta_sign=False, beta=0.5,
        spiking=SpikingOptions(input_mode=input_mode, rule="spike_triggered"))
    model = build_model(spec)
    model.params["b0"][:] = 0.2
    x = rng.random((8, 30), dtype=np.float32)
    labels = rng.integers(0, 5, 8)
    before = {k: v.copy() for k, v in model.params.items()}
    model.train_batch(x, labels, np.random.default_rng(0))
    spike_update = {k: model.params[k] - before[k] for k in before}
    model.params = {k: v.copy() for k, v in before.items()}
    model.spec = spec.replace(spiking=SpikingOptions(input_mode=input_mode, rule="contrastive"))
    model.train_batch(x, labels, np.random.default_rng(0))
    for name in ("w0", "w1"):
        a, b = spike_update[name].ravel(), (model.params[name] - before[name]).ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.7, name


def test_training_learns_real_mnist(mnist):
    """A few thousand real images take the continuous and spiking models well above chance."""
    from poise.golden.train import as_input, evaluate, train_epoch

    for spec in (default_spec("continuous", (784, 64, 10)),
                 default_spec("spiking", (784, 64, 10)).replace(steps_free=40, steps_nudge=20)):
        model = build_model(spec)
        train_epoch(model, mnist.train_images[:3000], mnist.train_labels[:3000], 1, progress=False)
        result = evaluate(model, as_input(mnist.test_images[:500]), mnist.test_labels[:500])
        assert result.accuracy > 0.75, spec.model


@pytest.mark.parametrize("encoder", ["sigma_delta", "stochastic"])
def test_input_drive_is_the_product_of_the_previous_input_spikes(encoder):
    """Spike mode: the first hidden layer's drive at step k is qᵏ⁻¹·W₀ over all pixels, and 0 at step 0."""
    rng = np.random.default_rng(7)
    x = rng.random((6, 40), dtype=np.float32)
    x[:, :5] = 0  # pixels that never spike
    x[0] = 0  # an image that never spikes
    w0 = rng.normal(0, 1, (40, 9)).astype(np.float32)
    options = SpikingOptions(encoder=encoder, predictive=Schedule("power", 0.832, 0.584))
    trains = InputTrains(x, Encoder(options, np.random.default_rng(0)), options.predictive.table(30))
    spikes = trains.spikes(slice(None))
    assert spikes.shape == (30, 6, 40) and set(np.unique(spikes)) == {0.0, 1.0}
    assert not spikes[:, :, :5].any() and not spikes[:, 0].any()
    expected = np.concatenate([np.zeros((1, 6, 9)), spikes[:-1].astype(np.float64) @ w0])
    np.testing.assert_allclose(trains.drives(w0), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(trains.spikes_per_image(slice(0, 20)), spikes[:20].sum(axis=(0, 2)))
