"""Products without multipliers: the signed digits rebuild the constant with no two adjacent, the
shift-and-add tree equals the product by a constant, and the sum of partial products equals the product of
two signals, for signed and unsigned operands at their edges."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth.hdl import Module, Shape, Signal, signed, unsigned
from amaranth.sim import Simulator

from poise.rtl.neuron import constant_product, logic_product, signed_digits

CONSTANTS = [0, 1, 2, 3, 5, 7, 16, 49, 255, 16777, 33554, (1 << 23) - 1, -1, -6, -33554]


@pytest.mark.parametrize("constant", [c for c in CONSTANTS if c >= 0])
def test_signed_digits_rebuild_the_constant_with_no_two_adjacent(constant):
    digits = signed_digits(constant)
    assert sum(digit << shift for digit, shift in digits) == constant
    shifts = [shift for _, shift in digits]
    assert all(b - a >= 2 for a, b in itertools.pairwise(shifts))
    assert len(digits) <= bin(constant).count("1")


@pytest.mark.parametrize("shape", [signed(22), unsigned(10)])
def test_constant_product_is_the_product(shape):
    rng = np.random.default_rng(shape.width)
    if shape.signed:
        low, high = -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    else:
        low, high = 0, (1 << shape.width) - 1
    values = [low, low + 1, -1 if shape.signed else 1, 0, 1, high - 1, high, *rng.integers(low, high + 1, 40)]
    m = Module()
    operand = Signal(shape)
    products = []
    for constant in CONSTANTS:
        product = Signal(signed(shape.width + abs(constant).bit_length() + 2))
        m.d.comb += product.eq(constant_product(operand, constant))
        products.append(product)
    got: list[list[int]] = []

    async def bench(ctx):
        for value in values:
            ctx.set(operand, int(value))
            got.append([ctx.get(product) for product in products])

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [[int(value) * constant for constant in CONSTANTS] for value in values]


def edges(shape: Shape) -> list[int]:
    if shape.signed:
        low, high = -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    else:
        low, high = 0, (1 << shape.width) - 1
    return sorted({low, low + 1, 0, 1, high - 1, high} | ({-1} if shape.signed else set()))


@pytest.mark.parametrize("shape", [signed(8), signed(13), unsigned(9)])
def test_logic_product_is_the_product_over_every_pixel(shape):
    rng = np.random.default_rng(shape.width)
    m = Module()
    value, bits = Signal(shape), Signal(unsigned(8))
    product = Signal(signed(shape.width + 10))
    m.d.comb += product.eq(logic_product(value, bits))
    values = [*edges(shape), *rng.integers(edges(shape)[0], edges(shape)[-1] + 1, 6)]
    pairs = [(int(v), b) for v in values for b in range(256)]  # every 8-bit multiplier
    got: list[int] = []

    async def bench(ctx):
        for v, b in pairs:
            ctx.set(value, v)
            ctx.set(bits, b)
            got.append(ctx.get(product))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [v * b for v, b in pairs]
