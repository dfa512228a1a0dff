"""One whole board build in the default suite, the quickest one: a small network on the OrangeCrab's ECP5-25F
at one lane, through the real YoWASP Yosys, nextpnr, ecppack and dfu-suffix (about 1.5 minutes on a warm
tool cache). The slower builds of every board's own network are ``poise bench boards``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_cli import poise

from poise.boards.flash import programmer
from poise.golden.bundle import Bundle, save_bundle
from poise.golden.fixed import derive_fixed_spec
from poise.golden.model import build_model
from poise.golden.spec import SpikingOptions, default_spec

PROJECT = Path(__file__).resolve().parents[1]


def small_bundle(path: Path) -> Path:
    spec = default_spec("spiking", (16, 12, 5)).replace(spiking=SpikingOptions(input_mode="current"))
    params = build_model(spec).params
    save_bundle(path, Bundle(spec, params, {"dataset": "mnist"}, derive_fixed_spec(spec, params, learning=True)))
    return path


def test_orangecrab_build_of_a_small_network_reports_what_it_measured(tmp_path):
    out = tmp_path / "build"
    status, stdout, stderr = poise("build", "--board", "orangecrab", "--bundle", small_bundle(tmp_path / "small.npz"),
                                   "--lanes", "1", "--out", out, "--json")
    assert "}" in stdout, stderr
    report = json.loads(stdout[stdout.index("{"):stdout.rindex("}") + 1])  # between the progress lines
    assert report == json.loads((out / "build.json").read_text())
    assert status == (0 if report["timing_met"] else 1), stderr
    assert report["timing_met"] == (report["fmax_mhz"] >= report["target_mhz"] == 48)
    assert 0 < report["fmax_mhz"] < 1000

    # The resources are nextpnr's: the design is on the device, with its multipliers and block RAMs.
    cells = report["utilization"]
    assert cells["TRELLIS_COMB"]["available"] == 24288 and 500 < cells["TRELLIS_COMB"]["used"] < 24288
    assert cells["DP16KD"]["available"] == 56 and 1 <= cells["DP16KD"]["used"] <= 56
    assert cells["MULT18X18D"]["used"] >= 1

    # The bitstream is an ECP5-25F one, with the DFU suffix of the bootloader that poise flash talks to.
    bitstream = Path(report["bitstream"]).read_bytes()
    assert b"LFE5U-25F" in bitstream[:64] and b"\xff\xff\xbd\xb3" in bitstream[:64]  # part name, preamble
    suffix = bitstream[-16:]
    vendor, product = int.from_bytes(suffix[4:6], "little"), int.from_bytes(suffix[2:4], "little")
    assert suffix[8:11] == b"UFD" and f"{vendor:04x}:{product:04x}" == programmer("orangecrab").usb_id

    # The critical path is the one that sets Fmax, between two cells of the design, through lines of poise's
    # gateware that exist (it may run through none, e.g. from a memory to a memory).
    path = report["critical_path"]
    assert path["total_ns"] == pytest.approx(1e3 / report["fmax_mhz"], rel=0.02)
    assert abs(path["logic_ns"] + path["routing_ns"] - path["total_ns"]) < 0.05
    assert path["start"].startswith("soc.") or path["end"].startswith("soc.")
    for source in path["sources"]:
        file, line = source.rsplit(":", 1)
        assert 1 <= int(line) <= len((PROJECT / file).read_text().splitlines())
