"""The sigma-delta encoder's Verilog on Verilator, driven by cocotb (tests/sigma_delta_tb.py)."""

from pathlib import Path

from poise.golden.fixed import FixedFormat
from poise.rtl.sigma_delta import SigmaDeltaEncoder
from poise.sim.cocotb_runner import run_cocotb

FMT = FixedFormat(16, 12)
TB = Path(__file__).with_name("sigma_delta_tb.py")


def test_sigma_delta_on_verilator():
    run = run_cocotb(
        SigmaDeltaEncoder(FMT),
        "sigma_delta",
        TB,
        params={"width": FMT.width, "frac": FMT.frac, "seed": 20240611, "count": 5_000},
    )
    assert sorted(run.passed) == [
        "sigma_delta_tb.matches_reference_under_back_pressure",
        "sigma_delta_tb.one_result_per_cycle",
    ]
