"""``poise train`` and ``poise eval`` on small real-MNIST subsets: the run directory, exact resume, clear errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from run_cli import poise, poise_process

from poise.golden.bundle import load_bundle

CONTINUOUS = ["--model", "continuous", "--arch", "784-32-10", "--train-limit", "600", "--test-limit", "200"]
# 1000 images: enough for one spiking epoch to be clearly better than chance.
SPIKING = ["--model", "spiking", "--arch", "784-32-10", "--steps", "20,10", "--train-limit", "1000",
           "--test-limit", "100"]
STOCHASTIC = ["--model", "spiking", "--arch", "784-32-10", "--steps", "20,10", "--encoder", "stochastic",
              "--train-limit", "200", "--test-limit", "100"]
METRIC_KEYS = {"epoch", "test_error", "train_error", "seconds", "spikes_per_image", "synops_per_image"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def train(out: Path, args: list[str], *extra: object) -> str:
    status, stdout, stderr = poise("train", *args, "--out", out, "--no-progress", *extra)
    assert status == 0, stderr
    return stdout


def metrics(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def check_run_directory(out: Path, epochs: int, train_images: int, test_images: int) -> list[dict]:
    """Everything a finished run directory must hold; returns its metrics rows."""
    assert {"model.npz", "checkpoint.npz", "metrics.jsonl", "learning_curve.png"} <= {p.name for p in out.iterdir()}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    rows = metrics(out)
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    for row in rows:
        assert set(row) >= METRIC_KEYS
        assert 0 <= row["test_error"] <= 1
        assert 0 <= row["train_error"] <= 1
        assert row["seconds"] > 0
    png = (out / "learning_curve.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR"
    assert png.endswith(b"IEND\xaeB`\x82")
    final, checkpoint = load_bundle(out / "model.npz"), load_bundle(out / "checkpoint.npz")
    assert final.info["history"] == rows
    assert final.info["dataset"] == "mnist"
    assert (final.info["train_images"], final.info["test_images"]) == (train_images, test_images)
    assert checkpoint.spec == final.spec
    for name, array in final.params.items():
        assert checkpoint.params[name].tobytes() == array.tobytes(), name
    return rows


@pytest.fixture(scope="module")
def continuous_run(tmp_path_factory, mnist) -> Path:
    out = tmp_path_factory.mktemp("continuous")
    stdout = train(out, CONTINUOUS, "--epochs", 2)
    assert "epoch 2:" in stdout
    return out


@pytest.fixture(scope="module")
def spiking_run(tmp_path_factory, mnist) -> Path:
    out = tmp_path_factory.mktemp("spiking")
    train(out, SPIKING, "--epochs", 1)
    return out


# --- training --------------------------------------------------------------------------------------


def test_train_continuous(continuous_run):
    rows = check_run_directory(continuous_run, epochs=2, train_images=600, test_images=200)
    assert rows[-1]["test_error"] < 0.6  # chance is 0.9
    assert rows[-1]["train_error"] < rows[0]["train_error"]
    assert all(row["spikes_per_image"] == 0 for row in rows)
    bundle = load_bundle(continuous_run / "model.npz")
    assert (bundle.spec.model, bundle.spec.layers) == ("continuous", (784, 32, 10))


def test_train_spiking(spiking_run):
    rows = check_run_directory(spiking_run, epochs=1, train_images=1000, test_images=100)
    assert rows[-1]["test_error"] < 0.6
    assert rows[-1]["spikes_per_image"] > 0
    # Every spike reaches at least one synapse (most reach 32 or more).
    assert rows[-1]["synops_per_image"] > rows[-1]["spikes_per_image"]
    bundle = load_bundle(spiking_run / "model.npz")
    assert (bundle.spec.model, bundle.spec.steps_free, bundle.spec.steps_nudge) == ("spiking", 20, 10)


def test_train_as_a_program(tmp_path, mnist):
    done = poise_process("train", "--arch", "784-8-10", "--train-limit", "40", "--test-limit", "20", "--epochs", "1",
                         "--out", tmp_path, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    check_run_directory(tmp_path, epochs=1, train_images=40, test_images=20)


def test_learning_rate_decay_scales_the_second_epoch(tmp_path, mnist):
    """Epoch 1 is the same with and without decay; epoch 2 with decay d moves the weights by about d times as much."""
    runs = {}
    for decay in ("1", "0.25"):
        out = tmp_path / decay
        train(out, CONTINUOUS, "--epochs", 1, "--lr-decay", decay)
        first = load_bundle(out / "checkpoint.npz").params["w1"].copy()
        train(out, CONTINUOUS, "--epochs", 2, "--lr-decay", decay, "--resume")
        runs[decay] = first, load_bundle(out / "model.npz").params["w1"]
    assert runs["1"][0].tobytes() == runs["0.25"][0].tobytes()
    ratio = np.linalg.norm(runs["0.25"][1] - runs["0.25"][0]) / np.linalg.norm(runs["1"][1] - runs["1"][0])
    assert 0.15 < ratio < 0.4


# --- resume ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [CONTINUOUS, STOCHASTIC, [*CONTINUOUS, "--lr-decay", "0.5"]],
                         ids=["continuous", "spiking-stochastic", "continuous-lr-decay"])
def test_resume_equals_an_uninterrupted_run(tmp_path, args, mnist):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(whole, args, "--epochs", 2)
    train(split, args, "--epochs", 1)
    after_one = load_bundle(split / "checkpoint.npz")
    resumed = train(split, args, "--epochs", 2, "--resume")

    assert "resuming after epoch 1" in resumed
    assert "epoch 1:" not in resumed  # epoch 1 was not trained again
    assert "epoch 2:" in resumed
    a, b = load_bundle(whole / "model.npz"), load_bundle(split / "model.npz")
    assert a.spec == b.spec
    assert sorted(a.params) == sorted(b.params)
    for name in a.params:
        assert a.params[name].tobytes() == b.params[name].tobytes(), name
    assert a.params["w0"].tobytes() != after_one.params["w0"].tobytes()  # epoch 2 did change the weights
    rows_a, rows_b = metrics(whole), metrics(split)
    assert len(rows_b) == 2
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for key in ("epoch", "test_error", "train_error", "spikes_per_image", "synops_per_image"):
            assert row_a[key] == row_b[key], key


def test_resume_without_checkpoint(tmp_path, mnist):
    status, _, stderr = poise("train", *CONTINUOUS, "--epochs", 2, "--out", tmp_path / "new", "--resume")
    assert status == 1
    assert stderr.startswith("poise: error:")
    assert "nothing to resume" in stderr
    assert str(tmp_path / "new" / "checkpoint.npz") in stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--arch", "784-16-10"], "different spec"),
        (["--lr", "0.2,0.05"], "different spec"),
        (["--seed", "7"], "different spec"),
        (["--train-limit", "300"], "same dataset and limits"),
    ],
    ids=["arch", "lr", "seed", "train-limit"],
)
def test_resume_with_other_options_is_refused(tmp_path, continuous_run, change, message):
    shutil.copy(continuous_run / "checkpoint.npz", tmp_path / "checkpoint.npz")
    before = (tmp_path / "checkpoint.npz").read_bytes()
    status, _, stderr = poise("train", *CONTINUOUS, *change, "--epochs", 3, "--out", tmp_path, "--resume")
    assert status == 1
    assert stderr.startswith("poise: error:")
    assert message in stderr
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def test_resume_errors_as_a_program(tmp_path, continuous_run):
    done = poise_process("train", "--arch", "784-32-10", "--out", tmp_path, "--resume")
    assert done.returncode == 1
    assert done.stderr.startswith("poise: error:")
    assert "Traceback" not in done.stderr
    shutil.copy(continuous_run / "checkpoint.npz", tmp_path / "checkpoint.npz")
    done = poise_process("train", *CONTINUOUS, "--arch", "784-16-10", "--epochs", 3, "--out", tmp_path, "--resume")
    assert done.returncode == 1
    assert "different spec" in done.stderr
    assert "Traceback" not in done.stderr


# --- eval ------------------------------------------------------------------------------------------


def eval_json(bundle: Path, *extra: object) -> dict:
    status, stdout, stderr = poise("eval", bundle, "--json", *extra)
    assert status == 0, stderr
    assert stdout.count("\n") == 1  # exactly one line: one JSON object
    summary = json.loads(stdout)
    assert isinstance(summary, dict)
    return summary


def test_eval_json(continuous_run, mnist):
    summary = eval_json(continuous_run / "model.npz", "--limit", 200)
    assert {"accuracy", "error", "confusion", "spikes_per_image", "synops_per_image"} <= set(summary)
    confusion = np.array(summary["confusion"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == 200
    assert np.array_equal(confusion.sum(axis=1), np.bincount(mnist.test_labels[:200], minlength=10))
    assert summary["accuracy"] == pytest.approx(np.trace(confusion) / 200)
    assert summary["accuracy"] + summary["error"] == pytest.approx(1.0)
    assert summary["spikes_per_image"] == 0
    # The continuous model is deterministic and training scored the same 200 images after its last epoch.
    assert summary["error"] == pytest.approx(metrics(continuous_run)[-1]["test_error"])


def test_eval_json_spiking(spiking_run, mnist):
    summary = eval_json(spiking_run / "model.npz", "--limit", 200)
    confusion = np.array(summary["confusion"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == 200
    assert summary["accuracy"] + summary["error"] == pytest.approx(1.0)
    assert summary["accuracy"] > 0.4
    assert summary["synops_per_image"] > summary["spikes_per_image"] > 0


def test_eval_text(continuous_run):
    status, stdout, _ = poise("eval", continuous_run / "model.npz", "--limit", 50, "--no-progress")
    assert status == 0
    assert "50 test images" in stdout
    assert "accuracy" in stdout
    assert "confusion matrix" in stdout


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing"])
def test_eval_of_a_bad_bundle(tmp_path, continuous_run, damage):
    path = tmp_path / "model.npz"
    raw = (continuous_run / "model.npz").read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 3])
    elif damage == "flip":
        arrays = load_bundle(continuous_run / "model.npz").params
        with np.load(continuous_run / "model.npz") as archive:
            meta = archive["__meta__"]
        arrays["b0"][0] += 1.0
        np.savez(path, **arrays, __meta__=meta)  # new weights, old checksum
    status, stdout, stderr = poise("eval", path, "--json")
    assert status == 1
    assert stdout == ""
    assert stderr.startswith("poise: error:")
    assert str(path) in stderr
    assert {"truncate": "truncated", "flip": "checksum mismatch", "missing": "no such bundle file"}[damage] in stderr


def test_eval_of_a_bad_bundle_as_a_program(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"PK\x03\x04 not really")
    done = poise_process("eval", path, "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("poise: error:")
    assert str(path) in done.stderr
    assert "Traceback" not in done.stderr


def test_eval_on_a_dataset_of_another_width(tmp_path, monkeypatch, continuous_run):
    monkeypatch.setenv("POISE_DATA", str(tmp_path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", train_images=rng.integers(0, 256, (6, 20), dtype=np.uint8),
             train_labels=np.arange(6, dtype=np.uint8), test_images=rng.integers(0, 256, (4, 20), dtype=np.uint8),
             test_labels=np.arange(4, dtype=np.uint8))
    status, _, stderr = poise("eval", continuous_run / "model.npz", "--dataset", "tiny", "--json")
    assert status == 1
    assert "20 pixels" in stderr
    assert "784" in stderr


# --- bad command lines -----------------------------------------------------------------------------


BAD_TRAIN_OPTIONS = [
    # (options, exit status: 1 for a PoiseError, 2 for argparse, text the message must contain)
    (["--arch", "784-abc-10"], 1, "784-abc-10"),
    (["--arch", "784"], 1, "784"),
    (["--lr", "0.1"], 1, "learning rates"),
    (["--lr", "0.1,0.05,0.01"], 1, "learning rates"),
    (["--lr", "0.1,fast"], 1, "--lr"),
    (["--steps", "many,few"], 1, "--steps"),
    (["--steps", "0,4"], 1, "steps_free"),
    (["--epsilon", "big"], 1, "schedule"),
    (["--seed", "-1"], 1, "--seed"),
    (["--batch-size", "0"], 1, "batch_size"),
    (["--train-limit", "0"], 2, "--train-limit"),
    (["--test-limit", "-5"], 2, "--test-limit"),
    (["--model", "quantum"], 2, "--model"),
    (["--epochs", "two"], 2, "--epochs"),
]


@pytest.mark.parametrize(
    ("args", "status", "message"), [pytest.param(*case, id=" ".join(case[0])) for case in BAD_TRAIN_OPTIONS]
)
def test_bad_train_options(tmp_path, args, status, message):
    out = tmp_path / "run"
    got, _, stderr = poise("train", "--arch", "784-32-10", "--train-limit", "20", "--test-limit", "20",
                           *args, "--out", out, "--no-progress")
    assert got == status
    assert message in stderr
    assert ("poise: error:" if status == 1 else "error: argument") in stderr
    assert "Traceback" not in stderr
    assert not out.exists()  # nothing was trained


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--arch", "784-abc-10"], "784-abc-10", id="arch"),
        pytest.param(["--lr", "0.1"], "learning rates", id="lr-count"),
        pytest.param(["--lr", "x,y"], "--lr", id="lr-text"),
        pytest.param(["--lr-decay", "1.5"], "decay", id="lr-decay"),
    ],
)
def test_bad_train_options_as_a_program(tmp_path, args, message):
    done = poise_process("train", *args, "--out", tmp_path / "run")
    assert done.returncode == 1
    assert done.stderr.startswith("poise: error:")
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("limit", ["0", "-3", "ten"])
def test_bad_eval_limit(continuous_run, limit):
    status, _, stderr = poise("eval", continuous_run / "model.npz", "--limit", limit)
    assert status == 2
    assert "--limit" in stderr
