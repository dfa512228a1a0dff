"""``poise bench boards`` without the builds: which bundle each board gets, the resource classes, the
throughput arithmetic, and the report of a board that builds beside one that does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from poise.boards.bench import PUBLISHED, board_bundles, markdown, plot, resource_classes, throughput
from poise.boards.profiles import board_profile
from poise.embedded import ULX3S_BUNDLE, embedded_bundle
from poise.errors import PoiseError


def test_each_board_gets_its_option_then_its_profiles_bundle(tmp_path):
    bundles = board_bundles(["icebreaker", "ulx3s"], [f"ulx3s={tmp_path / 'big.npz'}"])
    assert bundles == {"icebreaker": board_profile("icebreaker").bundle, "ulx3s": tmp_path / "big.npz"}
    assert board_bundles(["ulx3s"], []) == {"ulx3s": embedded_bundle(ULX3S_BUNDLE)}
    for bad in ("ulx3s", "orangecrab=x.npz", "=x.npz"):
        with pytest.raises(PoiseError, match="BOARD=FILE"):
            board_bundles(["icebreaker", "ulx3s"], [bad])


def test_resource_classes_group_the_families_cell_types():
    ice40 = {"ICESTORM_LC": {"used": 6594, "available": 5280}, "ICESTORM_RAM": {"used": 26, "available": 30},
             "ICESTORM_DSP": {"used": 14, "available": 8}, "SB_GB": {"used": 3, "available": 8}}
    assert resource_classes(ice40) == {"logic": ice40["ICESTORM_LC"], "block RAM": ice40["ICESTORM_RAM"],
                                       "DSP": ice40["ICESTORM_DSP"]}
    ecp5 = {"TRELLIS_COMB": {"used": 100, "available": 200}, "TRELLIS_FF": {"used": 50, "available": 200}}
    assert resource_classes(ecp5) == {"logic": ecp5["TRELLIS_COMB"], "flip-flops": ecp5["TRELLIS_FF"]}


def test_throughput_is_the_smaller_of_compute_at_fmax_and_the_uart():
    compute_bound = throughput(30.0, 48_000_000, 30_000, uart=5000.0)
    assert compute_bound["images_per_second_at_fmax"] == pytest.approx(1000.0)
    assert compute_bound["images_per_second_at_target"] == pytest.approx(1600.0)
    assert compute_bound["board_images_per_second"] == pytest.approx(1000.0)
    assert compute_bound["ms_per_image"] == pytest.approx(1.0)
    assert throughput(60.0, 48_000_000, 30_000, uart=1500.0)["board_images_per_second"] == pytest.approx(1500.0)
    unbuilt = throughput(None, 24_000_000, 24_000, uart=1500.0)
    assert unbuilt["images_per_second_at_fmax"] is None and unbuilt["ms_per_image"] is None


def test_report_shows_a_build_beside_one_that_does_not_fit(tmp_path: Path):
    built = {"board": "ulx3s", "device": "ECP5 LFE5U-85F", "network": "784-128-10", "lanes": 8, "fits": True,
             "timing_met": False, "fmax_mhz": 30.6, "target_mhz": 48.0, "cycles_per_image": 24_000.0,
             "accuracy": 0.9722, "resources": {"logic": {"used": 14964, "available": 83640}},
             "critical_path": {"total_ns": 32.7, "start": "a", "end": "b", "sources": ["rtl/neuron.py:197"]},
             **throughput(30.6, 48_000_000, 24_000.0, uart=1478.0)}
    unfit = {"board": "icebreaker", "device": "iCE40UP5K", "network": "784-128-10", "lanes": 8, "fits": False,
             "timing_met": False, "fmax_mhz": None, "target_mhz": 24.0, "cycles_per_image": 24_000.0,
             "accuracy": 0.9722, "resources": {"logic": {"used": 6594, "available": 5280}},
             **throughput(None, 24_000_000, 24_000.0, uart=1478.0)}
    result = {"command": "poise bench boards", "date": "2026-12-02", "entries": [built, unfit],
              "published": list(PUBLISHED)}
    table = markdown(result)
    assert "| ulx3s (ECP5 LFE5U-85F) | 784-128-10, 8 | 14,964 / 83,640 (18%) |" in table
    assert "30.6 / 48 | FAIL | 24,000 | 1,275 | 1,478 | 0.78 | 97.22 % |" in table
    assert "| icebreaker (iCE40UP5K) | 784-128-10, 8 | 6,594 / 5,280 (125%) |" in table and "does not fit" in table
    assert "| Spiker+ | 784-128-10 LIF | Xilinx | 7,612 | 18 | 0.78 | 93.85 % |" in table
    assert "ulx3s: 32.7 ns, a -> b, through rtl/neuron.py:197" in table
    plot(result, tmp_path / "boards.png")
    assert (tmp_path / "boards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
