"""General-dynamics EqProp with untied weights ([004]) against the symmetric model and the paper's claims."""

import numpy as np
import pytest

from poise.errors import PoiseError
from poise.golden.asymmetric import AsymmetricEqProp, alignment
from poise.golden.bundle import Bundle, load_bundle, save_bundle
from poise.golden.continuous import ContinuousEqProp
from poise.golden.model import build_model
from poise.golden.spec import AsymmetricOptions, Schedule, default_spec


def tied_pair(seed: int = 0, layers: tuple[int, ...] = (12, 9, 7, 4)) -> tuple[AsymmetricEqProp, ContinuousEqProp]:
    """An asymmetric network whose feedback is exactly wᵀ, and the symmetric network with the same weights."""
    spec = default_spec("asymmetric", layers).replace(
        steps_free=60, steps_nudge=30, asymmetric=AsymmetricOptions(feedback_init="transpose"))
    asymmetric = AsymmetricEqProp(spec)
    rng = np.random.default_rng(seed)
    for name in asymmetric.params:
        if name.startswith("b"):
            asymmetric.params[name][:] = rng.uniform(0, 0.3, asymmetric.params[name].shape)
    symmetric = ContinuousEqProp(spec.replace(model="continuous", asymmetric=None),
                                 {k: v for k, v in asymmetric.params.items() if not k.startswith("f")})
    return asymmetric, symmetric


def test_tied_feedback_runs_the_symmetric_dynamics():
    """With F = Wᵀ the [004] field is the symmetric one, and [004]'s β(y − h) is [001]'s 2(β/2)(y − s)."""
    asymmetric, symmetric = tied_pair()
    rng = np.random.default_rng(1)
    x = rng.random((5, 12), dtype=np.float32)
    labels = rng.integers(0, 4, 5)
    free_a, nudged_a = asymmetric.phases(x, labels, 1.0)
    free_s, nudged_s = symmetric.phases(x, labels, 0.5)
    for a, s in zip([*free_a, *nudged_a], [*free_s, *nudged_s], strict=True):
        np.testing.assert_allclose(a, s, rtol=0, atol=1e-6)
    assert any(np.abs(a - f).max() > 1e-3 for a, f in zip(nudged_a, free_a, strict=True))  # the nudge acts


def test_tied_updates_sum_to_the_contrastive_update_for_small_beta():
    """Eq. 56 gives W the term ρ(pre)Δpost and F the term ρ(post)Δpre; with F = Wᵀ their sum is
    Δ(ρ_pre ρ_post) of [001] Eq. 2.12 up to the second-order term Δ_pre Δ_post."""
    asymmetric, _ = tied_pair(2)
    rng = np.random.default_rng(3)
    x = rng.random((6, 12), dtype=np.float32)
    labels = rng.integers(0, 4, 6)
    beta = 0.05
    free, nudged = asymmetric.phases(x, labels, beta)
    deltas = asymmetric.updates(x, free, nudged, beta)
    for index in (1, 2):
        combined = deltas[f"w{index}"] + deltas[f"f{index}"].T
        pre_f, post_f, pre_n, post_n = free[index - 1], free[index], nudged[index - 1], nudged[index]
        rate = asymmetric.spec.learning_rates[index]
        contrastive = rate / beta * (pre_n.T @ post_n - pre_f.T @ post_f) / len(x)
        cosine = (combined * contrastive).sum() / (np.linalg.norm(combined) * np.linalg.norm(contrastive))
        assert cosine > 0.999, index
        assert 0.9 < np.linalg.norm(combined) / np.linalg.norm(contrastive) < 1.1


def test_feedback_weights_are_separate_parameters():
    spec = default_spec("asymmetric", (8, 6, 5, 3))
    model = AsymmetricEqProp(spec)
    assert model.param_shapes()["f1"] == (5, 6) and model.param_shapes()["f2"] == (3, 5)
    assert "f0" not in model.params  # the clamped input has no feedback
    assert abs(alignment(model)[0]) < 0.5  # independent Glorot draws are nearly orthogonal
    rng = np.random.default_rng(4)
    before = {k: v.copy() for k, v in model.params.items()}
    model.train_batch(rng.random((4, 8), dtype=np.float32), rng.integers(0, 3, 4), rng)
    for name in ("w1", "f1", "w2", "f2"):
        assert not np.array_equal(model.params[name], before[name]), name
    assert not np.allclose(model.params["f1"], model.params["w1"].T)


def test_alignment_is_one_for_scaled_transpose_and_reports_the_trace():
    model = AsymmetricEqProp(default_spec("asymmetric", (8, 6, 3)))
    model.params["f1"] = 3.0 * model.params["w1"].T
    assert alignment(model) == pytest.approx([1.0])
    assert alignment(model, raw=True) == pytest.approx([3.0 * float((model.params["w1"] ** 2).sum())])
    model.params["f1"] = -model.params["w1"].T
    assert alignment(model) == pytest.approx([-1.0])


def test_bundle_round_trip_keeps_feedback_and_rejects_missing_feedback(tmp_path):
    model = AsymmetricEqProp(default_spec("asymmetric", (8, 6, 3)))
    path = tmp_path / "asym.npz"
    save_bundle(path, Bundle(model.spec, model.params, {}))
    loaded = load_bundle(path)
    np.testing.assert_array_equal(build_model(loaded.spec, loaded.params).params["f1"], model.params["f1"])
    params = {k: v for k, v in model.params.items() if k != "f1"}
    with pytest.raises(PoiseError, match="f1"):
        build_model(model.spec, params)


def test_osa_step_size_is_refused():
    with pytest.raises(PoiseError, match="OSA"):
        AsymmetricEqProp(default_spec("asymmetric", (8, 6, 3)).replace(epsilon=Schedule("osa")))


def test_untied_network_learns_real_mnist_and_its_weights_align(mnist):
    """[004] Fig. 3: training with independent feedback weights works and tr(W·F) turns positive."""
    from poise.golden.train import as_input, evaluate, train_epoch

    spec = default_spec("asymmetric", (784, 64, 10)).replace(steps_free=40, steps_nudge=20)
    model = build_model(spec)
    start = alignment(model)[0]
    train_epoch(model, mnist.train_images[:3000], mnist.train_labels[:3000], 1, progress=False)
    result = evaluate(model, as_input(mnist.test_images[:500]), mnist.test_labels[:500])
    assert result.accuracy > 0.6
    assert alignment(model)[0] > start + 0.05
