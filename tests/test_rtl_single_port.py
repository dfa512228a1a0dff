"""Weight banks in one single-ported memory (:mod:`poise.rtl.single_port`): the banks' contract cycle by cycle
against a model of the UP5K's SPRAM, and the mapping to SB_SPRAM256KA that the iCEBreaker build relies on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from yosys_run import yosys

from poise.rtl.single_port import drop_initial_contents, packing, single_port_banks

WIDTH = 8


class Banks(wiring.Component):
    """``lanes`` single-ported banks of ``depth`` signed bytes with their ports as component members."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        lanes, depth = image.shape
        by_bank = lambda shape: data.ArrayLayout(shape, lanes)  # noqa: E731
        super().__init__({"read_addr": In(by_bank(range(depth))), "write_addr": In(by_bank(range(depth))),
                          "write_data": In(by_bank(signed(WIDTH))), "write_en": In(lanes),
                          "read_data": Out(by_bank(signed(WIDTH)))})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        for bank, (read, write) in enumerate(single_port_banks(m, "w", signed(WIDTH), self.image)):
            m.d.comb += [read.addr.eq(self.read_addr[bank]), self.read_data[bank].eq(read.data),
                         write.addr.eq(self.write_addr[bank]), write.data.eq(self.write_data[bank]),
                         write.en.eq(self.write_en[bank])]
        return m


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_banks_read_one_word_write_per_bank_and_hold_the_read_while_writing(lanes):
    """Also with two addresses of one bank in a word (one lane of 8-bit weights in 16-bit words) and an odd
    depth."""
    assert packing(lanes, WIDTH) == {1: 2, 2: 1, 4: 1}[lanes]
    rng = np.random.default_rng(7)
    depth = 25
    image = rng.integers(-128, 128, (lanes, depth))
    dut = Banks(image)
    memory = image.copy()
    expected, got = [], []
    held = None

    async def bench(ctx):
        nonlocal held
        for cycle in range(400):  # the first cycle reads: before any read the output is undefined on SPRAM
            read_addr = int(rng.integers(depth))
            enables = [bool(cycle and rng.random() < 0.3) for _ in range(lanes)]
            write_addrs, write_data = rng.integers(depth, size=lanes), rng.integers(-128, 128, lanes)
            for bank in range(lanes):
                ctx.set(dut.read_addr[bank], read_addr)
                ctx.set(dut.write_addr[bank], int(write_addrs[bank]))
                ctx.set(dut.write_data[bank], int(write_data[bank]))
            ctx.set(dut.write_en, sum(enable << bank for bank, enable in enumerate(enables)))
            await ctx.tick()
            if any(enables):  # one address for all: the lowest writing bank's; the read output holds
                address = write_addrs[enables.index(True)]
                for bank in range(lanes):
                    if enables[bank]:
                        memory[bank, address] = write_data[bank]
            else:
                held = memory[:, read_addr].copy()
            expected.append(held.tolist())
            got.append([ctx.get(dut.read_data[bank]) for bank in range(lanes)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected


@pytest.mark.parametrize("lanes", [1, 2])
def test_banks_map_to_spram_once_their_initial_contents_are_dropped(lanes, tmp_path):
    """32,800 bytes in two banks of 16,400, or in one bank two to a word, are two SPRAMs of 16 k words of
    16 bits and no block RAM."""
    image = np.random.default_rng(3).integers(-128, 128, (lanes, 32_800 // lanes))
    yosys(rtlil.convert(Banks(image)), tmp_path, drop_initial_contents(), "synth_ice40 -spram -top top -run :map_ffram",
          "tee -q -o stat.json stat -json")
    cells = json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]
    assert cells.get("SB_SPRAM256KA") == 2
    assert not [cell for cell in cells if "SB_RAM40_4K" in cell]


class BanksBesideAMemory(Banks):
    def elaborate(self, platform: object) -> Module:
        m = super().elaborate(platform)
        m.submodules.other = other = Memory(shape=8, depth=4, init=[1, 2, 3, 4])
        read = other.read_port()
        m.d.comb += [read.addr.eq(self.read_addr[0]), self.read_data[1].eq(read.data)]  # kept: it is read
        return m


def test_only_the_boot_loaded_memory_loses_its_initial_contents(tmp_path):
    """SPRAM takes no initial contents: the build's command deletes those of the banks' memory and no other."""
    text = rtlil.convert(BanksBesideAMemory(np.ones((2, 8), np.int64)))
    yosys(text, tmp_path, "select -assert-count 2 t:$meminit_v2", drop_initial_contents(),
          "select -assert-count 1 t:$meminit_v2", "select -assert-count 1 t:$meminit_v2 r:MEMID=*other* %i")
