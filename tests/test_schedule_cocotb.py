"""The schedule ROM's Verilog on Verilator, driven by cocotb (tests/schedule_tb.py)."""

from pathlib import Path

import pytest
from neuron_vectors import small_model

from poise.rtl.schedule import ScheduleROM
from poise.sim.cocotb_runner import run_cocotb

TB = Path(__file__).with_name("schedule_tb.py")
TESTS = ["schedule_tb.matches_tables_under_back_pressure", "schedule_tb.one_lookup_per_cycle"]


@pytest.mark.parametrize("predictive", [True, False], ids=["default", "no_predictive"])
def test_schedule_rom_on_verilator(predictive):
    """The derived default spec of a fresh 784-32-10 network, with and without predictive coding."""
    fixed = small_model(predictive=predictive).fixed
    run = run_cocotb(ScheduleROM(fixed), "schedule_rom", TB, params={"fixed": fixed.to_dict(), "seed": 20240612})
    assert sorted(run.passed) == TESTS
