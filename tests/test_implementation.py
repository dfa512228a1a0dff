# amaranth: UnusedElaboratable=no
"""A build's implementation choices reach Yosys: in the RTLIL of the SoC's core, every memory of at most the
threshold carries the LUT RAM (or, for a ROM, logic) attribute and every larger one none; the default marks
nothing."""

from __future__ import annotations

import re

from amaranth.back import rtlil
from test_rtl_controller import small_model

from poise.rtl.geometry import CoreGeometry
from poise.rtl.implementation import Implementation
from poise.rtl.soc import SoC, SoCConfig

MEMORY = re.compile(r"((?:  attribute \\\w+ \S+\n)*)  memory width (\d+) size (\d+) (\S+)")


def memories(implementation: Implementation) -> list[tuple[str, int, dict[str, str]]]:
    """(name, bits, attributes) of every memory of the core of a two-lane SoC built with ``implementation``."""
    model = small_model()
    geometry = CoreGeometry(model.spec, model.fixed, 2)
    soc = SoC(geometry, model.weights, model.biases,
              SoCConfig(clock_hz=40_000, baud=10_000, lanes=2, max_body=300, implementation=implementation))
    assert soc.core.implementation == implementation
    text = rtlil.convert(soc.core)
    found = []
    for attributes, width, depth, name in MEMORY.findall(text):
        attrs = dict(re.findall(r'attribute \\(\w+) "([^"]*)"', attributes))
        found.append((name, int(width) * int(depth), attrs))
    return found


def test_memories_up_to_the_threshold_are_marked_and_larger_ones_are_not():
    threshold = 200
    found = memories(Implementation(distributed_bits=threshold))
    small = [(name, attrs) for name, bits, attrs in found if bits <= threshold]
    large = [(name, attrs) for name, bits, attrs in found if bits > threshold]
    assert small and large  # the threshold splits this design
    for name, attrs in small:
        style = {"rom_style": "logic"} if name.endswith("_rom") else {"ram_style": "distributed"}
        assert {key: attrs[key] for key in ("rom_style", "ram_style") if key in attrs} == style, name
    for name, attrs in large:
        assert "ram_style" not in attrs and "rom_style" not in attrs, name
    assert any(name.endswith("_rom") for name, _ in small)  # the schedule ROMs take the style too


def test_the_default_implementation_marks_no_memory():
    for name, _, attrs in memories(Implementation()):
        assert "ram_style" not in attrs and "rom_style" not in attrs, name
