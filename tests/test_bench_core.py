"""``poise bench core``: the core's cycles per image on Verilator beside its bounds, every result checked."""

import json

from run_cli import poise

from poise.golden.bundle import Bundle, save_bundle
from poise.golden.model import build_model
from poise.golden.spec import SpikingOptions, default_spec


def small_bundle(path, model="spiking"):
    spec = default_spec(model, (784, 12, 10))
    if model == "spiking":
        spec = spec.replace(steps_free=16, steps_nudge=8, spiking=SpikingOptions(input_mode="current"))
    save_bundle(path, Bundle(spec, build_model(spec).params, {"dataset": "mnist"}))
    return path


def test_bench_core_measures_cycles_against_the_bounds(tmp_path, mnist):
    out = tmp_path / "bench"
    status, _, stderr = poise("bench", "core", "--bundle", small_bundle(tmp_path / "b.npz"), "--lanes", "2",
                              "--modes", "current", "--images", "3", "--train-images", "2", "--out", out)
    assert status == 0, stderr
    report = json.loads((out / "core.json").read_text())
    (entry,) = report["entries"]
    assert entry["bit_exact"] and entry["training_bit_exact"]
    assert (entry["mode"], entry["lanes"], entry["images"], entry["train_images"]) == ("current", 2, 3, 2)
    # Neither bound can be beaten, and the neuron bound is neurons × free steps.
    assert entry["cycles_per_image"] >= max(entry["synop_bound"], entry["neuron_bound"]) > 0
    assert entry["neuron_bound"] == 22 * 16
    assert entry["cycles_per_training_image"] > entry["cycles_per_image"]
    assert 0 < entry["synapse_cycles_per_image"] < entry["cycles_per_image"] and entry["lane_use"] > 0
    assert (out / "core_cycles.png").stat().st_size > 1000
    assert "| current | 2 | 3 |" in (out / "core.md").read_text() and report["command"].startswith("poise bench core")


def test_bench_core_refuses_other_models_and_modes(tmp_path):
    bundle = small_bundle(tmp_path / "c.npz", model="continuous")
    status, _, stderr = poise("bench", "core", "--bundle", bundle, "--out", tmp_path)
    assert status != 0 and "the core runs spiking networks" in stderr and "poise train --model spiking" in stderr
    status, _, stderr = poise("bench", "core", "--bundle", small_bundle(tmp_path / "s.npz"), "--modes", "analog",
                              "--out", tmp_path)
    assert status != 0 and "unknown input mode" in stderr
