"""cocotb tests of the network core's Verilog against the integer golden model, bit for bit.

Started by ``tests/test_core_cocotb.py`` through :func:`poise.sim.cocotb_runner.run_cocotb` with the param
``case``: a :class:`~poise.sim.core_driver.CoreCase` NPZ (the network, the lane count, the images and their
labels, and the options ``trace_images`` and ``train_images``).
"""

from __future__ import annotations

from typing import Any

import cocotb
import numpy as np

from poise.sim.cocotb_runner import tb_params
from poise.sim.core_driver import CocotbCore, CoreCase, golden_results, result_mismatch, trace_columns, trace_mismatch


async def start(dut: Any) -> tuple[CoreCase, CocotbCore]:
    case = CoreCase.load(tb_params()["case"])
    core = CocotbCore(dut, case.geometry)
    await core.reset()
    return case, core


@cocotb.test()
async def traces_match(dut: Any) -> None:
    """Per image: an inference (result and every register of the free phase), then a free and nudged phase
    without learning, β positive for even images and negative for odd ones (every register of every step)."""
    case, core = await start(dut)
    model = case.model()
    for k in range(case.options.get("trace_images", len(case.images))):
        image, label, negative = case.images[k], int(case.labels[k]), bool(k % 2)
        result, words = await core.run_image(image)
        context = f"image {k}, inference: "
        problem = trace_mismatch(case.geometry, model.trace(image), trace_columns(case.geometry, words),
                                 context) or result_mismatch(golden_results(model, image[None])[0], result, context)
        assert problem is None, problem
        result, words = await core.run_image(image, train=True, label=label, beta_negative=negative)
        golden = model.trace(image, label, -1 if negative else 1)
        problem = trace_mismatch(case.geometry, golden, trace_columns(case.geometry, words),
                                 f"image {k}, nudged towards {label} with β {'<' if negative else '>'} 0: ")
        assert problem is None, problem


@cocotb.test()
async def learns_like_golden(dut: Any) -> None:
    """On-chip training, β's sign alternating and the learning-rate shift cycling through 0, 1 and 3: every
    register at every step of every image (the nudged phase learning as it goes), its prediction, then every
    weight and bias."""
    case, core = await start(dut)
    model = case.model()
    count = case.options.get("train_images", len(case.images))
    for k in range(count):
        image, label, negative = case.images[k], int(case.labels[k]), bool(k % 2)
        model.lr_shift = (0, 1, 3)[k % 3]
        result, words = await core.run_image(image, train=True, learn=True, label=label, beta_negative=negative,
                                             lr_shift=model.lr_shift)
        expected, golden = model.train_image_traced(image, label, -1 if negative else 1)
        problem = trace_mismatch(case.geometry, golden, trace_columns(case.geometry, words),
                                 f"training image {k}: ")
        assert problem is None, problem
        assert result["prediction"] == expected, (f"training image {k}: prediction {result['prediction']}, "
                                                  f"golden {expected}")
    weights, biases = await core.read_parameters()
    changed = 0
    for layer, (got, want, start_w) in enumerate(zip(weights, model.weights, case.weights, strict=True)):
        differ = [tuple(int(i) for i in index) for index in np.argwhere(got != want)]
        assert not differ, (f"after {count} images W{layer} differs in {len(differ)} weights, first at (row, col) = "
                            f"{differ[0]}: core {got[differ[0]]}, golden {want[differ[0]]}")
        changed += int((want != start_w).sum())
    for layer, (got, want) in enumerate(zip(biases, model.biases, strict=True)):
        assert np.array_equal(got, want), f"after {count} images the biases of layer {layer + 1} differ"
    assert changed > 0, "training changed no weight: the check would not see a learning bug"


@cocotb.test()
async def parameter_port_writes_reads_and_refuses(dut: Any) -> None:
    """Writes read back; a row, column or layer outside the network, or a value outside its format, is refused
    with the error flag and changes nothing."""
    case, core = await start(dut)
    fixed, layers = case.fixed, case.geometry.layers
    before_weights, before_biases = await core.read_parameters()  # earlier tests may have trained
    last = len(layers) - 2
    row, col = layers[last] - 1, layers[last + 1] - 1
    for value in (fixed.weight.min_raw, fixed.weight.max_raw, int(before_weights[last][row, col])):
        assert await core.access(layer=last, row=row, col=col, value=value) == (value, False)
        assert await core.access(layer=last, row=row, col=col) == (value, False)
    assert await core.access(layer=0, col=0, bias=True, value=fixed.bias.min_raw) == (fixed.bias.min_raw, False)
    original = int(before_biases[0][0])
    assert await core.access(layer=0, col=0, bias=True, value=original) == (original, False)
    refused = [
        {"layer": last, "row": row, "col": col + 1, "value": 1},  # a column past the matrix
        {"layer": last, "row": row + 1, "col": 0, "value": 1},  # a row past the matrix
        {"layer": last, "row": 0, "col": 0, "value": fixed.weight.max_raw + 1},  # outside the weight format
        {"layer": 0, "col": layers[1], "bias": True, "value": 0},  # a bias past the layer
        {"layer": 0, "col": 0, "bias": True, "value": fixed.bias.min_raw - 1},
        {"layer": last, "row": row, "col": col + 1},  # reads too
    ]
    if (len(layers) - 1) & (len(layers) - 2):  # the layer field can name a matrix that does not exist
        refused.append({"layer": len(layers) - 1, "col": 0, "value": 1})
    for where in refused:
        value, error = await core.access(**where)
        assert error and value == 0, f"the core accepted {where}"
    weights, biases = await core.read_parameters()
    for got, want in zip(weights + biases, before_weights + before_biases, strict=True):
        assert np.array_equal(got, want), "a refused access changed a parameter"
