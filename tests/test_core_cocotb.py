"""The network core's Verilog on Verilator against the integer golden model (tests/core_tb.py): every
register of every neuron at every step, results, and the weights after on-chip training, bit for bit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from poise.boards.profiles import board_profile
from poise.embedded import embedded_bundle
from poise.golden.fixed import derive_fixed_spec
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.spec import SpikingOptions, default_spec
from poise.rtl.core import NetworkCore
from poise.rtl.implementation import GENERIC, Implementation
from poise.sim.cocotb_runner import run_cocotb
from poise.sim.core_driver import CoreCase

TB = Path(__file__).with_name("core_tb.py")


def random_case(layers: tuple[int, ...], mode: str, lanes: int, seed: int, *, predictive: bool = True,
                continue_time: bool = True, learn_rounding: str = "stochastic", images: int = 6) -> CoreCase:
    """A random network with large weights (many at the format's limits) and fast learning, short phases; the
    images include an all-zero and an all-255 one (every input at once: the largest fan-in)."""
    options = SpikingOptions(input_mode=mode, rule="spike_triggered", continue_time=continue_time)
    if not predictive:
        options = dataclasses.replace(options, predictive=None)
    spec = default_spec("spiking", layers).replace(steps_free=14, steps_nudge=7, spiking=options, seed=seed)
    spec = spec.replace(learning_rates=tuple(30 * rate for rate in spec.learning_rates))
    rng = np.random.default_rng(seed)
    params = {name: value * 4 if name.startswith("w") else rng.uniform(-0.3, 0.3, value.shape)
              for name, value in build_model(spec).params.items()}
    fixed = derive_fixed_spec(spec, params, learning=True, learn_rounding=learn_rounding)
    model = IntegerSpikingModel.from_float(spec, params, fixed)
    pixels = rng.integers(0, 256, (images, layers[0])).astype(np.uint8)
    pixels[rng.random(pixels.shape) < 0.4] = 0
    pixels[0], pixels[1] = 0, 255
    return CoreCase.from_model(model, lanes, pixels, rng.integers(0, layers[-1], images),
                               trace_images=4, train_images=images)


def run_case(case: CoreCase, path: Path, tests: list[str], implementation: Implementation = GENERIC
             ) -> tuple[str, ...]:
    core = NetworkCore(case.geometry, case.weights, case.biases, implementation)
    return run_cocotb(core, "network_core", TB, testcase=tests, params={"case": str(case.save(path))}).passed


CASES = {
    "current, one hidden layer, 4 lanes": dict(layers=(16, 12, 5), mode="current", lanes=4, seed=1),
    "spike, two hidden layers, 2 lanes, t restarts, shallow neuron pipeline": dict(
        layers=(12, 8, 6, 4), mode="spike", lanes=2, seed=2, continue_time=False),
    "current, two hidden layers, 8 lanes, no predictive coding, nearest": dict(
        layers=(10, 9, 7, 3), mode="current", lanes=8, seed=3, predictive=False, learn_rounding="nearest"),
    "current, one hidden layer, 1 lane, the iCEBreaker's implementation (single-ported W₀, 2 weights a word)": dict(
        layers=(15, 13, 5), mode="current", lanes=1, seed=4),
}


@pytest.mark.parametrize("name", list(CASES))
def test_core_matches_integer_model_on_random_networks(name, tmp_path):
    case = random_case(**CASES[name])
    tests = ["traces_match", "learns_like_golden", "parameter_port_writes_reads_and_refuses"]
    implementation = (board_profile("icebreaker").soc.implementation if "iCEBreaker" in name
                      else Implementation(shallow_neuron="shallow" in name))
    passed = run_case(case, tmp_path / "case.npz", tests, implementation)
    assert sorted(passed) == sorted(f"core_tb.{test}" for test in tests)


ICEBREAKER = embedded_bundle()


def test_core_runs_real_mnist_through_the_trained_icebreaker_bundle(mnist, tmp_path):
    """The embedded 784-128-10 fixed-point bundle in the iCEBreaker's core (its lanes and implementation,
    W₀ single-ported two weights to a word): three test images traced register by register
    (free phase, and a nudged phase without learning), then 20 training images learned on chip, after which
    every weight and bias equals the golden model's. The training images are ones the network gets wrong:
    on the ones it gets right, the nudge barely moves the states and no 8-bit weight changes."""
    from poise.golden.bundle import load_bundle

    model = IntegerSpikingModel.from_bundle(load_bundle(ICEBREAKER))
    candidates = slice(0, 4000)
    wrong = np.flatnonzero(model.infer(mnist.train_images[candidates]).predictions != mnist.train_labels[candidates])
    assert len(wrong) >= 20, "the bundle makes fewer than 20 mistakes on these images; take more candidates"
    soc = board_profile("icebreaker").soc
    traced = CoreCase.from_model(model, soc.lanes, mnist.test_images[:3], mnist.test_labels[:3])
    trained = dataclasses.replace(traced, images=mnist.train_images[wrong[:20]], labels=mnist.train_labels[wrong[:20]])
    assert run_case(traced, tmp_path / "traced.npz", ["traces_match"], soc.implementation) == ("core_tb.traces_match",)
    assert run_case(trained, tmp_path / "trained.npz", ["learns_like_golden"], soc.implementation) == (
        "core_tb.learns_like_golden",)
