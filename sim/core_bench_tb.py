"""cocotb test module of ``poise bench core``: stream images through the core's Verilog and check each result
against the integer golden model.

Params (:func:`~poise.sim.cocotb_runner.tb_params`): ``case``, a :class:`~poise.sim.core_driver.CoreCase`
NPZ whose options say ``train`` (on-chip training instead of inference) and ``check_weights`` (read every
weight back after training); ``out``, the JSON file the per-image results go to; optionally ``progress``, a
file that gets the number of images done after each image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cocotb
import numpy as np

from poise.sim.cocotb_runner import tb_params
from poise.sim.core_driver import CocotbCore, CoreCase, golden_results, result_mismatch


@cocotb.test()
async def stream_images(dut: Any) -> None:
    """Every image once, in order; every result must equal the golden model's (inference: prediction, output
    states, spikes, SynOps; training: the prediction, and with ``check_weights`` every weight at the end)."""
    params = tb_params()
    case = CoreCase.load(params["case"])
    core = CocotbCore(dut, case.geometry)
    await core.reset()
    model = case.model()
    train = bool(case.options.get("train"))
    rows, mismatches, started = [], [], time.perf_counter()
    expected = None if train else golden_results(model, case.images)
    for k, (image, label) in enumerate(zip(case.images, case.labels, strict=True)):
        negative = bool(k % 2) and case.spec.random_beta_sign
        result, _ = await core.run_image(image, train=train, learn=train, label=int(label), beta_negative=negative,
                                         trace=False)
        if train:
            prediction = model.train_image(image, int(label), -1 if negative else 1)
            problem = None if result["prediction"] == prediction else (
                f"training image {k}: prediction {result['prediction']}, golden {prediction}")
        else:
            problem = result_mismatch(expected[k], result, f"image {k}: ")
        if problem:
            mismatches.append(problem)
        rows.append({key: value for key, value in result.items() if key != "outputs"} | {"label": int(label)})
        if "progress" in params:  # the parent process shows a progress bar from it
            Path(params["progress"]).write_text(str(k + 1))
    if train and case.options.get("check_weights"):
        weights, biases = await core.read_parameters()
        for layer, (got, want) in enumerate(zip(weights + biases, model.weights + model.biases, strict=True)):
            if not np.array_equal(got, want):
                mismatches.append(f"parameter array {layer} differs in {int((got != want).sum())} values")
    Path(params["out"]).write_text(json.dumps({"results": rows, "mismatches": mismatches,
                                               "seconds": time.perf_counter() - started}))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]}"
