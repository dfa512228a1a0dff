"""``poise quantize``: a float spiking bundle becomes a fixed-point bundle that fits a board, with its accuracy cost."""

import json
from pathlib import Path

import numpy as np
import pytest
from run_cli import poise, poise_process

from poise.boards.memory import BOARDS, memory_needs
from poise.golden.bundle import Bundle, load_bundle, save_bundle
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.spec import default_spec

SMALL = ["--model", "spiking", "--arch", "784-32-10", "--steps", "40,20", "--input-mode", "current",
         "--train-limit", "2000", "--test-limit", "100", "--epochs", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist) -> Path:
    out = tmp_path_factory.mktemp("quantize") / "run"
    status, _, stderr = poise("train", *SMALL, "--out", out, "--no-progress")
    assert status == 0, stderr
    return out / "model.npz"


def untrained_bundle(path: Path, layers: tuple[int, ...], model: str = "spiking") -> Path:
    spec = default_spec(model, layers)
    save_bundle(path, Bundle(spec, build_model(spec).params, {"dataset": "mnist"}))
    return path


def test_quantize_writes_a_fixed_point_bundle_and_reports_its_cost(tmp_path, trained, mnist):
    out = tmp_path / "fixed.npz"
    status, stdout, stderr = poise("quantize", trained, "--board", "icebreaker", "--limit", "300", "--out", out,
                                   "--json")
    assert status == 0, stderr
    summary = json.loads(stdout)
    bundle = load_bundle(out)
    assert bundle.fixed is not None and bundle.fixed.weight.width == 8
    assert summary["formats"]["weight"] == [8, bundle.fixed.weight.frac]
    # The reported accuracies are those of the two models, measured again here.
    integer = IntegerSpikingModel.from_bundle(bundle).infer(mnist.test_images[:300])
    assert summary["integer_accuracy"] == pytest.approx(float((integer.predictions == mnist.test_labels[:300]).mean()))
    assert summary["images"] == 300 and abs(summary["cost_points"]) < 0.05 and summary["agreement"] > 0.9
    assert summary["float_accuracy"] > 0.4  # the float model did learn, so the comparison means something
    assert bundle.info["quantization"]["integer_accuracy"] == summary["integer_accuracy"]
    needs = memory_needs(bundle.spec.layers, bundle.fixed)
    assert summary["memory_bits"]["parameters"] == needs.parameter_bits == (784 * 32 + 32 * 10) * 8 + 42 * 8


def test_fixed_point_spec_file_round_trip(tmp_path, trained):
    first = tmp_path / "first.npz"
    assert poise("quantize", trained, "--weight-bits", "6", "--limit", "20", "--out", first, "--no-progress")[0] == 0
    fixed = load_bundle(first).fixed
    assert fixed.weight.width == 6
    spec_file = tmp_path / "fixed.json"
    spec_file.write_text(json.dumps(fixed.to_dict()))
    second = tmp_path / "second.npz"
    status, _, stderr = poise("quantize", trained, "--spec", spec_file, "--limit", "20", "--out", second,
                              "--no-progress")
    assert status == 0, stderr
    assert load_bundle(second).fixed == fixed


def test_a_network_too_big_for_the_board_is_refused_with_the_numbers(tmp_path, mnist):
    big = untrained_bundle(tmp_path / "big.npz", (784, 500, 10))
    out = tmp_path / "never.npz"
    status, _, stderr = poise("quantize", big, "--board", "icebreaker", "--out", out)
    assert status == 1
    assert "784-500-10 needs 397 k weights × 8 bit" in stderr and "SPRAM" in stderr
    hidden = int(stderr.split("the largest hidden layer that fits is ")[1].split()[0])
    fixed = derive_for(big)
    ice = BOARDS["icebreaker"]
    fits = memory_needs((784, hidden, 10), fixed)
    assert fits.parameter_bits <= ice.memories[0].bits < memory_needs((784, hidden + 1, 10), fixed).parameter_bits
    assert not out.exists()
    # The paper's network fits the ULX3S's ECP5-85F.
    assert poise("quantize", big, "--board", "ulx3s", "--limit", "10", "--out", out, "--no-progress")[0] == 0


def derive_for(path: Path):
    from poise.golden.fixed import derive_fixed_spec

    bundle = load_bundle(path)
    return derive_fixed_spec(bundle.spec, bundle.params)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda d: untrained_bundle(d / "c.npz", (784, 16, 10), "continuous"), "sigma-delta spiking",
                     id="continuous-bundle"),
        pytest.param(lambda d: d / "missing.npz", "no such bundle", id="missing"),
    ],
)
def test_bad_bundles_are_clear_errors(tmp_path, make, message):
    done = poise_process("quantize", make(tmp_path), "--board", "ulx3s")
    assert done.returncode == 1
    assert done.stderr.startswith("poise: error:") and message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_spec_file_is_a_clear_error(tmp_path, trained):
    spec_file = tmp_path / "fixed.json"
    spec_file.write_text("{not json")
    status, _, stderr = poise("quantize", trained, "--spec", spec_file)
    assert status == 1 and str(spec_file) in stderr and "JSON" in stderr
    spec_file.write_text(json.dumps({"weight": [8, 7]}))
    status, _, stderr = poise("quantize", trained, "--spec", spec_file)
    assert status == 1 and "not a valid fixed-point spec" in stderr


def test_weight_quantisation_saturates_nothing_it_measured(trained):
    """The derived weight format holds the largest trained weight, so no weight is clipped."""
    bundle = load_bundle(trained)
    fixed = derive_for(trained)
    model = IntegerSpikingModel.from_float(bundle.spec, bundle.params, fixed)
    for i, w in enumerate(model.weights):
        step = 2.0 ** -fixed.weight.frac
        assert np.abs(fixed.weight.to_float(w) - bundle.params[f"w{i}"]).max() <= step / 2 + 1e-9
