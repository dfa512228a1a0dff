"""The neuron update pipeline's Verilog on Verilator, driven by cocotb (tests/neuron_tb.py)."""

from pathlib import Path

import numpy as np
import pytest
from neuron_vectors import small_model

from poise.golden.integer import IntegerSpikingModel
from poise.golden.neuron_ref import trace_updates
from poise.rtl.neuron import NeuronUpdate
from poise.sim.cocotb_runner import run_cocotb

TB = Path(__file__).with_name("neuron_tb.py")


@pytest.fixture(scope="module")
def model() -> IntegerSpikingModel:
    """The derived default spec of a fresh 784-32-10 network (spike input, predictive coding)."""
    return small_model()


def run(model: IntegerSpikingModel, testcase: str | list[str], **params: object) -> tuple[str, ...]:
    fixed = model.fixed
    return run_cocotb(NeuronUpdate(fixed), "neuron_update", TB, testcase=testcase,
                      params={"fixed": fixed.to_dict(), "seed": 20240612, "count": 4_000, **params}).passed


def test_neuron_update_on_verilator(model):
    passed = run(model, ["matches_reference_under_back_pressure", "one_result_per_cycle"])
    assert sorted(passed) == ["neuron_tb.matches_reference_under_back_pressure", "neuron_tb.one_result_per_cycle"]


def test_neuron_update_replays_a_traced_mnist_image_on_verilator(model, mnist, tmp_path):
    """Free and nudged phase of one test image, β positive then negative: every register of every step."""
    pixels, label = mnist.test_images[0], int(mnist.test_labels[0])
    arrays: dict[str, list[np.ndarray]] = {}
    for beta_sign in (1, -1):
        inputs, expected = trace_updates(model, model.trace(pixels, label, beta_sign), pixels, label, beta_sign)
        for prefix, values in (("in", inputs), ("out", expected)):
            for name, value in values.items():
                arrays.setdefault(f"{prefix}_{name}", []).append(value)
    replay = tmp_path / "replay.npz"
    np.savez(replay, **{key: np.concatenate(parts) for key, parts in arrays.items()})
    assert run(model, "replays_trace", replay=str(replay)) == ("neuron_tb.replays_trace",)
