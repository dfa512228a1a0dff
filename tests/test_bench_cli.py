"""``poise bench golden``: the convergence experiment end to end, the report and the learning-curve plot."""

import json

from run_cli import poise

from poise.golden.bench import TRAINING_RUNS, plot_training_runs, read_history, report

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
