"""Every board's clock: each PLL setting makes exactly the profile's frequency with its phase detector and
VCO inside the device's specified ranges (iCE40 sysCLOCK and ECP5 sysCLOCK datasheet figures), and each
profile's UART divisor makes its baud rate exactly."""

from __future__ import annotations

import pytest

from poise.boards.platforms import board_platform
from poise.boards.profiles import PROFILES
from poise.boards.top import PLLS

# (phase detector MHz, VCO MHz) ranges: iCE40 LP/HX/UP PLL (FTN 10-133 MHz, VCO 533-1066 MHz), ECP5 (PFD
# 3.125-400 MHz, VCO 400-800 MHz).
RANGES = {"ice40": ((10, 133), (533, 1066)), "ecp5": ((3.125, 400), (400, 800))}


def pll_frequencies(family: str, input_hz: int, parameters: dict) -> tuple[float, float, float]:
    """(output, phase detector, VCO) in Hz, from the primitive's own divider equations."""
    if family == "ice40":
        detector = input_hz / (parameters["p_DIVR"] + 1)
        vco = detector * (parameters["p_DIVF"] + 1)
        return vco / 2 ** parameters["p_DIVQ"], detector, vco
    detector = input_hz / parameters["p_CLKI_DIV"]
    output = detector * parameters["p_CLKFB_DIV"]  # feedback from CLKOP
    return output, detector, output * parameters["p_CLKOP_DIV"]


@pytest.mark.parametrize("key", list(PLLS))
def test_pll_settings_make_their_frequency_within_the_devices_ranges(key):
    family, input_hz, output_hz = key
    output, detector, vco = pll_frequencies(family, input_hz, PLLS[key].parameters)
    (detector_low, detector_high), (vco_low, vco_high) = RANGES[family]
    assert output == output_hz
    assert detector_low <= detector / 1e6 <= detector_high, f"phase detector at {detector / 1e6:g} MHz"
    assert vco_low <= vco / 1e6 <= vco_high, f"VCO at {vco / 1e6:g} MHz"


@pytest.mark.parametrize("board", list(PROFILES))
def test_each_profile_has_a_clock_its_board_makes_and_an_exact_baud_divisor(board):
    profile, platform = PROFILES[board], board_platform(board)
    source = int(platform.default_clk_frequency)
    family = "ice40" if "iCE40" in platform.device else "ecp5"
    assert profile.soc.clock_hz == source or (family, source, profile.soc.clock_hz) in PLLS
    assert profile.soc.clock_hz == profile.soc.divisor * profile.soc.baud
