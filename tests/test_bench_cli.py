"""``poise bench golden``: the convergence experiment end to end, the report and the learning-curve plot.
``poise bench integer``: both experiments end to end on a tiny network."""

import json

import numpy as np
import pytest
from run_cli import poise

from poise.golden.bench import TRAINING_RUNS, plot_training_runs, read_history, report
from poise.golden.bench_integer import training_spec
from poise.golden.bundle import load_bundle
from poise.golden.fixed import derive_fixed_spec
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.train import evaluate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_convergence_reproduces_the_papers_ordering(tmp_path):
    """[000] Fig. 2: annealed ΣΔ with predictive coding converges far faster than stochastic spikes."""
    status, _, stderr = poise("bench", "golden", "--only", "convergence", "--out", tmp_path)
    assert status == 0, stderr
    entry = json.loads((tmp_path / "golden.json").read_text())["convergence"]
    final = entry["final_error"]
    assert final["ΣΔ + predictive, ε=0.843/t^0.0923, λ=0.832/t^0.584"] * 10 < final["stochastic, ε=1/√t"]
    assert final["ΣΔ, ε=1/√t"] < final["stochastic, ε=1/√t"]
    assert entry["pass"] is True and entry["command"].startswith("poise bench golden")
    assert (tmp_path / "convergence.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "error(1000)/error(10)" in (tmp_path / "golden.md").read_text()


def test_unknown_experiment_is_refused(tmp_path):
    status, _, stderr = poise("bench", "golden", "--only", "convergence,warp", "--out", tmp_path)
    assert status == 1 and "warp" in stderr
    assert not (tmp_path / "golden.json").exists()


def test_report_and_learning_curves_of_recorded_runs(tmp_path):
    rows = [{"epoch": e, "test_error": 0.05 / e, "train_error": 0.04 / e, "seconds": 2.0, "spikes_per_image": 0.0,
             "synops_per_image": 0.0} for e in (1, 2, 3, 4)]
    (tmp_path / "continuous").mkdir()
    (tmp_path / "continuous" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    history = read_history(tmp_path / "continuous")
    assert history == rows
    plot_training_runs(tmp_path / "curves.png", {"continuous": history})
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    entry = {"arch": "784-500-10", "epochs": 4, "mean_test_error_last_3": 0.0153, "best_test_error": 0.0125,
             "target_test_error": TRAINING_RUNS["continuous"]["target"], "pass": True, "seconds_per_epoch": 2.0,
             "spikes_per_image": 0.0, "synops_per_image": 0.0, "date": "2026-01-01"}
    table = report({"continuous": entry})
    assert "| continuous | 784-500-10 | 4 | 1.53% | 1.25% | ≤ 2.57% | True | 2.0 | — | — | 2026-01-01 |" in table


TINY = ["--model", "spiking", "--arch", "784-16-10", "--input-mode", "current", "--lr-decay", "0.85", "--epochs", "1",
        "--train-limit", "300", "--test-limit", "100", "--no-progress"]


def test_integer_bench_compares_the_float_and_integer_models(tmp_path, mnist):
    run = tmp_path / "run"
    assert poise("train", *TINY, "--out", run)[0] == 0
    bundle = load_bundle(run / "model.npz")
    assert training_spec((784, 16, 10)) == bundle.spec  # on-chip training starts from the bundle's spec
    status, _, stderr = poise("bench", "integer", "--bundle", run / "model.npz", "--arch", "784-16-10",
                              "--train-images", "40", "--checkpoints", "2", "--lr-scale", "0.5", "--test-limit", "100",
                              "--out", tmp_path, "--no-progress")
    assert status == 0, stderr
    results = json.loads((tmp_path / "integer.json").read_text())
    entry = results["inference"][str(run / "model.npz")]
    current, spike = entry["modes"]["current"], entry["modes"]["spike"]
    images, labels = mnist.test_images[:100], mnist.test_labels[:100]
    # The float model in the bundle's own mode scores what its training run measured on the same images.
    assert current["float_accuracy"] == pytest.approx(1 - bundle.info["history"][-1]["test_error"])
    integer = IntegerSpikingModel.from_float(bundle.spec, bundle.params, derive_fixed_spec(bundle.spec, bundle.params))
    assert current["integer_accuracy"] == pytest.approx(np.mean(integer.infer(images).predictions == labels))
    assert spike["formats"]["accumulator"] != current["formats"]["accumulator"]  # spike mode sums the input too
    for row in (current, spike):
        assert row["images"] == 100 and row["difference_points"] == pytest.approx(
            100 * (row["integer_accuracy"] - row["float_accuracy"]))
        assert row["pass"] == (abs(row["difference_points"]) <= 0.3)
    assert entry["command"] == f"poise bench integer --only inference --bundle {run / 'model.npz'} --test-limit 100"

    training = results["training"]
    assert training["images_trained"] == [0, 20, 40] and training["float_batch_size"] == 1
    assert training["spec"]["learning_rates"] == [0.05, 0.025] and training["spec"]["batch_size"] == 1
    assert training["command"] == ("poise bench integer --only training --arch 784-16-10 --train-images 40 "
                                   "--lr-scale 0.5 --checkpoints 2 --test-limit 100")
    spec = training_spec((784, 16, 10))
    fresh = build_model(spec)  # the Glorot draw both models start from (the seed is the spec's)
    fixed = derive_fixed_spec(spec, fresh.params, learning=True)
    start = IntegerSpikingModel.from_float(spec, fresh.params, fixed).infer(images).predictions
    assert training["integer_accuracy"][0] == pytest.approx(np.mean(start == labels))
    assert training["float_accuracy"][0] == pytest.approx(evaluate(fresh, images, labels).accuracy)
    assert training["pass"] == (abs(training["difference_points"]) <= 1)
    assert training["integer_images_per_second"] > 0 and set(training["integer_clamped"]) >= {"w", "b", "u"}
    assert (tmp_path / "integer_training.png").read_bytes().startswith(PNG_SIGNATURE)
    table = (tmp_path / "integer.md").read_text()
    assert f"| run | 784-16-10 | current | spike | {100 * spike['float_accuracy']:.2f} % |" in table
    assert "| images trained | 0 | 20 | 40 |" in table and "learning rates (0.05, 0.025)" in table


def test_integer_bench_refuses_inference_without_a_bundle(tmp_path):
    status, _, stderr = poise("bench", "integer", "--out", tmp_path)
    assert status == 1 and "--bundle" in stderr
    status, _, stderr = poise("bench", "integer", "--only", "training,warp", "--out", tmp_path)
    assert status == 1 and "warp" in stderr
    assert not (tmp_path / "integer.json").exists()
