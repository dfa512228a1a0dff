"""The EqSpike golden model ([002]) against facts that follow from its equations and our documented choices."""

import dataclasses

import numpy as np
import pytest

from poise.golden.eqspike import (
    EqSpikeModel,
    MovingAverage,
    RateDerivative,
    lif_step,
    spike_triggered_update,
)
from poise.golden.model import build_model
from poise.golden.spec import EqSpikeOptions, NetworkSpec, default_spec


def lif_rates(currents: np.ndarray, options: EqSpikeOptions, steps: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Spikes per step of LIF neurons under constant currents, and the spike trains (steps, n)."""
    u = np.zeros(currents.shape, np.float32)
    refractory = np.zeros(currents.shape, np.int64)
    trains = []
    for _ in range(steps):
        u, spikes, refractory = lif_step(u, refractory, currents, options)
        trains.append(spikes)
    trains = np.array(trains)
    return trains.mean(axis=0), trains


def test_lif_rate_is_monotone_in_current_and_bounded_by_f_max():
    """Rate grows with the current, is 0 for I ≤ 0, never exceeds f_max = 1/T_refract = 0.5 per step and
    reaches it for strong currents; no two spikes come within T_refract steps."""
    options = EqSpikeOptions()
    currents = np.linspace(-1.0, 2.0, 61, dtype=np.float32)
    rates, trains = lif_rates(currents, options)
    assert np.all(np.diff(rates) >= 0)
    assert rates.max() <= 0.5
    assert rates[-1] == 0.5
    assert np.all(rates[currents <= 0] == 0)
    assert not np.any(trains[1:] * trains[:-1])  # refractory: never on two consecutive steps


def test_lif_rate_is_the_hard_sigmoid_without_leak():
    """With γ_LIF = 0 the membrane is a sigma-delta integrator: rate = f_max·ρ(2I/u_th) up to 1/steps."""
    options = EqSpikeOptions(leak_lif=0.0)
    currents = np.linspace(-0.3, 0.8, 45, dtype=np.float32)
    rates, _ = lif_rates(currents, options, steps=1000)
    expected = 0.5 * np.clip(2 * currents, 0, 1)
    np.testing.assert_allclose(rates, expected, atol=2e-3)


def test_moving_average_is_the_mean_of_the_last_n_values():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((50, 2, 3)).astype(np.float32)
    average = MovingAverage((2, 3), 8)
    for t in range(50):
        window = signal[max(0, t - 7): t + 1]
        np.testing.assert_allclose(average.step(signal[t]), window.sum(axis=0) / 8, atol=1e-5)


def periodic_train(periods: list[tuple[int, int]]) -> np.ndarray:
    """A spike train made of (period, steps) segments: one spike every ``period`` steps."""
    return np.concatenate([(np.arange(steps) % period == 0).astype(np.float32) for period, steps in periods])


@pytest.mark.parametrize(("before", "after", "sign"), [(4, 2, 1), (2, 4, -1), (4, 4, 0)])
def test_rate_derivative_has_the_sign_of_the_rate_change(before, after, sign):
    """[002] Fig. 1e: the LI + τ-delay + N_filt filter output is > 0 while the rate rises, < 0 while it
    falls and 0 while it is constant; summed over the change it is τ·ΔV_LI ≈ (τ/γ_LI)·Δr."""
    options = EqSpikeOptions()
    train = periodic_train([(before, 200), (after, 200)])
    extractor = RateDerivative((1, 1), options)
    filtered = np.array([extractor.step(np.array([[s]], np.float32))[0, 0] for s in train])
    settled, change = filtered[150:200], filtered[200:]
    assert np.abs(settled).max() < 1e-3  # steady periodic firing (its period divides τ): no output
    if sign == 0:
        assert np.abs(change).max() < 1e-3
        return
    assert sign * change[:40].mean() > 0.5
    assert np.all(sign * change > -1e-3)  # never the wrong sign
    expected = options.delay / options.leak_li * (1 / after - 1 / before)
    assert change.sum() == pytest.approx(expected, rel=0.05)


def test_spike_of_pre_neuron_adds_eta_times_post_filter_output():
    """[002] Algorithm 1: a spike of i with F_j known changes w_ij by exactly η_r·F_j, and nothing else;
    a spike of j changes w_ij by η_r·F_i."""
    eta = 0.125
    pre_spikes = np.zeros((1, 3), np.float32)
    post_spikes = np.zeros((1, 2), np.float32)
    pre_filtered = np.array([[0.5, -2.0, 4.0]], np.float32)
    post_filtered = np.array([[0.75, -1.5]], np.float32)
    pre_spikes[0, 1] = 1.0
    delta = spike_triggered_update(pre_spikes, post_spikes, pre_filtered, post_filtered, eta)
    expected = np.zeros((3, 2), np.float32)
    expected[1] = eta * post_filtered[0]
    np.testing.assert_array_equal(delta, expected)
    delta = spike_triggered_update(np.zeros_like(pre_spikes), np.array([[0.0, 1.0]], np.float32), pre_filtered,
                                   post_filtered, eta)
    expected = np.zeros((3, 2), np.float32)
    expected[:, 1] = eta * pre_filtered[0]
    np.testing.assert_array_equal(delta, expected)


def test_spike_triggered_update_has_the_symmetric_form():
    """Exchanging the roles of the two layers gives the transposed update (one synapse, both directions),
    and the update of a batch is the sum of the updates of its images."""
    rng = np.random.default_rng(3)
    s_a, s_b = ((rng.random((4, n)) < 0.3).astype(np.float32) for n in (5, 3))
    f_a, f_b = (rng.standard_normal((4, n)).astype(np.float32) for n in (5, 3))
    forward = spike_triggered_update(s_a, s_b, f_a, f_b, 0.01)
    np.testing.assert_allclose(spike_triggered_update(s_b, s_a, f_b, f_a, 0.01), forward.T, atol=1e-7)
    per_image = sum(spike_triggered_update(s_a[k:k + 1], s_b[k:k + 1], f_a[k:k + 1], f_b[k:k + 1], 0.01)
                    for k in range(4))
    np.testing.assert_allclose(forward, per_image, atol=1e-6)


def test_eta_r_gives_the_effective_learning_rate():
    """l_r = η_r·τ/γ_LI ([002]) with rates in units of f_max: η_r·τ·f_max²/γ_LI = l_r."""
    spec = default_spec("eqspike", (784, 30, 10))
    model = build_model(spec)
    o = model.options
    for eta, rate in zip(model.eta_r, spec.learning_rates, strict=True):
        assert eta * o.delay / o.leak_li / o.refractory_steps**2 == pytest.approx(rate)


def test_default_spec_builds_the_eqspike_model_and_round_trips():
    spec = default_spec("eqspike", (784, 30, 10))
    assert isinstance(build_model(spec), EqSpikeModel)
    assert spec.batch_size == 1 and spec.eqspike == EqSpikeOptions()
    assert NetworkSpec.from_dict(spec.to_dict()) == spec


def tiny_spec(**changes: object) -> NetworkSpec:
    spec = default_spec("eqspike", (16, 12, 4)).replace(steps_free=60, steps_nudge=60, seed=2)
    return spec.replace(**changes)


def test_batch_runs_like_its_images_one_by_one():
    """Vectorisation: every image of a batch evolves as if alone, and the batch's update is the sum."""
    model = build_model(tiny_spec(eqspike=dataclasses.replace(EqSpikeOptions(), nudge_skip=-1.0)))
    rng = np.random.default_rng(0)
    x = rng.random((3, 16), dtype=np.float32)
    labels = np.array([0, 2, 3])
    together = model.run(x, labels)
    alone = [model.run(x[k:k + 1], labels[k:k + 1]) for k in range(3)]
    np.testing.assert_array_equal(together.rates, np.concatenate([a.rates for a in alone]))
    np.testing.assert_array_equal(together.spikes, np.concatenate([a.spikes for a in alone]))
    np.testing.assert_array_equal(together.synops, np.concatenate([a.synops for a in alone]))
    for layer in range(2):
        np.testing.assert_allclose(together.weight_updates[layer], sum(a.weight_updates[layer] for a in alone),
                                   atol=1e-3)
        np.testing.assert_allclose(together.bias_updates[layer], sum(a.bias_updates[layer] for a in alone),
                                   atol=1e-3)


def test_spikes_and_synops_count_the_free_phase():
    """With zero weights and biases only the inputs spike, and each input spike crosses n_hidden synapses;
    with a black image nothing spikes at all."""
    spec = tiny_spec()
    params = {name: np.zeros(shape, np.float32) for name, shape in build_model(spec).param_shapes().items()}
    model = build_model(spec, params)
    x = np.random.default_rng(1).random((2, 16), dtype=np.float32)
    result = model.infer(x)
    input_spikes = model.input_spikes(x, spec.steps_free).sum(axis=(0, 2))
    assert np.all(input_spikes > 0)
    np.testing.assert_array_equal(result.spikes, input_spikes)
    np.testing.assert_array_equal(result.synops, input_spikes * 12)
    dark = model.infer(np.zeros((2, 16), np.float32))
    assert not dark.spikes.any() and not dark.synops.any() and not dark.outputs.any()


def test_nudge_skip_decides_which_images_learn():
    """[002]: no nudged phase (and no update) for an image whose output rates are within ``nudge_skip``."""
    x = np.random.default_rng(2).random((4, 16), dtype=np.float32)
    labels = np.array([0, 1, 2, 3])
    model = build_model(tiny_spec(eqspike=dataclasses.replace(EqSpikeOptions(), nudge_skip=1.0)))
    before = {k: v.copy() for k, v in model.params.items()}
    model.train_batch(x, labels, np.random.default_rng(0))
    assert model.nudged_images == 0
    assert all(np.array_equal(before[k], model.params[k]) for k in before)
    model = build_model(tiny_spec(eqspike=dataclasses.replace(EqSpikeOptions(), nudge_skip=-1.0)))
    model.train_batch(x, labels, np.random.default_rng(0))
    assert model.nudged_images == 4
    assert not all(np.array_equal(before[k], model.params[k]) for k in before)


def test_nudge_moves_output_rates_towards_the_target():
    """The nudge u_o ← u_o − β·(ρ_o − ρ̂_o) brings the output rates closer to ρ̂ than the free phase left them."""
    model = build_model(tiny_spec(steps_free=100, steps_nudge=100))
    x = np.random.default_rng(4).random((8, 16), dtype=np.float32)
    labels = np.arange(8) % 4
    run = model.run(x, labels)
    assert run.nudged == 8
    target = model.target_rates(labels)
    free_miss = np.abs(run.rates - target).mean()
    assert free_miss > 0.2
    assert np.abs(run.nudged_rates - target).mean() < free_miss - 0.1
    for layer in (0, 1):  # and a larger β moves them further
        assert run.weight_updates[layer].any()
    strong = build_model(tiny_spec(steps_free=100, steps_nudge=100, beta=1.0)).run(x, labels)
    assert np.abs(strong.nudged_rates - target).mean() < np.abs(run.nudged_rates - target).mean()


def test_training_learns_a_separable_problem():
    """A 16-12-4 network learns four classes of noisy bar patterns well above chance (0.25)."""
    rng = np.random.default_rng(5)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 4, n)
        x = 0.15 * rng.random((n, 16), dtype=np.float32)
        for k, label in enumerate(labels):
            x[k, 4 * label: 4 * label + 4] += 0.8
        return np.clip(x, 0, 1).astype(np.float32), labels

    model = build_model(tiny_spec(batch_size=10, learning_rates=(0.05, 0.02)))
    x_test, y_test = sample(200)
    before = (model.infer(x_test).predictions == y_test).mean()
    x, y = sample(400)
    for first in range(0, 400, 10):
        model.train_batch(x[first:first + 10], y[first:first + 10], rng)
    after = (model.infer(x_test).predictions == y_test).mean()
    assert after > 0.9
    assert after > before + 0.3
