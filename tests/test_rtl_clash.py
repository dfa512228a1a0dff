"""Memories marked unclashed (:mod:`poise.rtl.clash`): the check flags a used read that meets a write to its
address and nothing else, and the board build's command removes Yosys' collision logic from those memories
only."""

from __future__ import annotations

import json

from amaranth.back import rtlil
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from yosys_run import yosys

from poise.rtl.clash import clash, ignore_collisions, unclashed


class TwoMemories(wiring.Component):
    """Two 16 × 8 memories with the same ports, the first marked unclashed; ``clash`` checks the first."""

    def __init__(self) -> None:
        super().__init__({"read_addr": In(4), "write_addr": In(4), "write_data": In(8), "write_en": In(1),
                          "used": In(1), "marked_data": Out(8), "plain_data": Out(8), "clash": Out(1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        for name, out in ((unclashed("marked"), self.marked_data), ("plain", self.plain_data)):
            m.submodules[name] = mem = Memory(shape=8, depth=16, init=[])
            read, write = mem.read_port(), mem.write_port()
            m.d.comb += [read.addr.eq(self.read_addr), write.addr.eq(self.write_addr), write.data.eq(self.write_data),
                         write.en.eq(self.write_en), out.eq(read.data)]
            if name != "plain":
                m.d.comb += self.clash.eq(clash(read.addr, write, self.used))
        return m


def test_clash_is_a_used_read_meeting_a_write_to_its_address():
    dut = TwoMemories()
    cases = [  # read address, write address, write enable, used → clash
        (3, 3, 1, 1, 1), (3, 3, 1, 0, 0), (3, 4, 1, 1, 0), (3, 3, 0, 1, 0), (0, 0, 1, 1, 1)]
    seen = []

    async def bench(ctx):
        for read_addr, write_addr, en, used, _ in cases:
            for port, value in ((dut.read_addr, read_addr), (dut.write_addr, write_addr), (dut.write_en, en),
                                (dut.used, used)):
                ctx.set(port, value)
            seen.append(ctx.get(dut.clash))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [case[-1] for case in cases]


def synthesised_cells(tmp_path, *commands: str) -> dict[str, int]:
    yosys(rtlil.convert(TwoMemories()), tmp_path, *commands, "synth_ice40 -top top", "tee -q -o stat.json stat -json")
    return json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]


def test_the_build_command_drops_the_collision_logic_of_the_marked_memory_only(tmp_path):
    """The command marks the one unclashed read port, and the logic that gives the old word on a collision
    (an address comparison and a multiplexer per bit) shrinks to the plain memory's."""
    marked = "t:$memrd_v2 r:COLLISION_X_MASK=1'1 %i"
    yosys(rtlil.convert(TwoMemories()), tmp_path, f"select -assert-count 0 {marked}", ignore_collisions(),
          f"select -assert-count 1 {marked}", f"select -assert-count 1 {marked} r:MEMID=*unclashed* %i")
    without, with_command = synthesised_cells(tmp_path), synthesised_cells(tmp_path, ignore_collisions())
    assert without.get("SB_RAM40_4K") == with_command.get("SB_RAM40_4K") == 2
    assert without["SB_LUT4"] - with_command["SB_LUT4"] >= 8  # at least the marked memory's 8 multiplexers
