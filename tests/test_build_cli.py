"""``poise build`` before any synthesis: a network too big for the board is refused with the numbers, a
float bundle is refused with the command that quantises it."""

import pytest
from run_cli import poise
from test_quantize_cli import untrained_bundle

from poise.boards.build import DoesNotFitError, check_block_rams
from poise.boards.profiles import board_profile
from poise.embedded import embedded_bundle
from poise.golden.bundle import load_bundle
from poise.rtl.geometry import CoreGeometry


def test_a_network_too_big_for_the_board_is_refused_before_synthesis(tmp_path, mnist):
    big = untrained_bundle(tmp_path / "big.npz", (784, 500, 10))
    fixed = tmp_path / "fixed.npz"
    assert poise("quantize", big, "--board", "ulx3s", "--limit", "10", "--out", fixed, "--no-progress")[0] == 0
    status, _, stderr = poise("build", "--board", "icebreaker", "--bundle", fixed, "--out", tmp_path / "build")
    assert status == 1
    assert "784-500-10 needs 397 k weights × 8 bit" in stderr and "the largest hidden layer that fits is" in stderr
    assert not (tmp_path / "build").exists(), "nothing is synthesised for a network that cannot fit"


def test_a_float_bundle_is_refused_with_the_quantize_command(tmp_path):
    bundle = untrained_bundle(tmp_path / "float.npz", (784, 32, 10))
    status, _, stderr = poise("build", "--board", "ulx3s", "--bundle", bundle, "--out", tmp_path / "build")
    assert status == 1 and "poise quantize" in stderr


NEXTPNR_LOG = """Info: Device utilisation:
Info: \t         ICESTORM_LC:    6594/   5280   124%
Info: \t        ICESTORM_RAM:      26/     30    86%
Info: \t        ICESTORM_DSP:      14/      8   175%
ERROR: Unable to place cell 'soc.core.increment_product_0_SB_MAC16_O_DSP', no BELs remaining
"""


def test_a_design_that_does_not_fit_names_the_overused_resources():
    from poise.boards.build import overused_resources

    assert overused_resources(NEXTPNR_LOG) == [("ICESTORM_LC", 6594, 5280), ("ICESTORM_DSP", 14, 8)]
    assert overused_resources("Info: \t  DP16KD:  76/ 208  37%\n") == []


def test_the_critical_path_is_the_clock_to_clock_one_with_poises_source_lines_in_order():
    from poise.boards.build import critical_path

    def step(kind, delay, cell, *sources):
        return {"type": kind, "delay": delay, "from": {"cell": cell}, "to": {"cell": cell}, "sources": list(sources)}

    report = {"critical_paths": [
        {"from": "<async>", "to": "posedge clk", "path": [step("routing", 9.0, "uart_rx")]},
        {"from": "posedge clk", "to": "posedge clk", "path": [
            step("clk-to-q", 5.5, "soc.core.w0_bank0"),
            step("routing", 3.0, "lut_a", "/share/lattice/cells_map_trellis.v:108.23-108.24"),
            step("logic", 0.5, "lut_a", "/somewhere/poise/rtl/synapse.py:33"),
            step("routing", 1.0, "adder", "/somewhere/poise/rtl/neuron.py:84", "/somewhere/poise/rtl/synapse.py:33"),
            step("setup", 0.25, "soc.core.w0_bank6"),
        ]},
    ]}
    path = critical_path(report)
    assert (path.start, path.end) == ("soc.core.w0_bank0", "soc.core.w0_bank6")
    assert (path.total_ns, path.routing_ns, path.logic_ns) == (10.25, 4.0, 6.25)
    assert path.sources == ["rtl/synapse.py:33", "rtl/neuron.py:84"]
    assert critical_path({"critical_paths": report["critical_paths"][:1]}) is None


def test_the_logged_utilisation_is_the_last_table():
    from poise.boards.build import logged_utilisation

    log = NEXTPNR_LOG.replace("6594", "7000") + NEXTPNR_LOG
    assert logged_utilisation(log)["ICESTORM_LC"] == {"used": 6594, "available": 5280}
    assert logged_utilisation(log)["ICESTORM_RAM"] == {"used": 26, "available": 30}


def test_weights_that_cannot_fit_the_block_rams_are_refused_before_synthesis(tmp_path):
    # On the OrangeCrab at 8 lanes: 7 DP16KD of 2048 x 9 per W0 bank and one per W1 bank, 64 of 56. With 120
    # hidden neurons a W0 bank is 784 x 15 words, 6 DP16KD, and 8 x 6 + 8 = 56 fit; 121 need 16 words again.
    bundle = embedded_bundle()
    status, _, stderr = poise("build", "--board", "orangecrab", "--bundle", bundle, "--lanes", "8",
                              "--out", tmp_path / "oc")
    assert status == 1 and "needs at least 64 DP16KD" in stderr and "has 56" in stderr
    assert "the largest hidden layer whose weights fit is 120." in stderr and not (tmp_path / "oc").exists()


def test_a_single_ported_w0_that_needs_more_than_the_four_sprams_is_refused():
    """784-166-10 fits the UP5K's 1 Mbit of SPRAM as bits, but at 4 lanes a row is 42 words of 32 bits:
    784 × 42 = 32,928 words need 3 SPRAMs deep and 2 wide, 6 of 4. At 1 lane, two weights to a word, the
    65,072 words fit."""
    bundle = load_bundle(embedded_bundle())
    implementation = board_profile("icebreaker").soc.implementation
    spec = bundle.spec.replace(layers=(784, 166, 10))
    with pytest.raises(DoesNotFitError, match=r"needs 6 SPRAMs for W₀ \(words of 4 weights, 32928 deep\)"):
        check_block_rams("icebreaker", CoreGeometry(spec, bundle.fixed, 4), implementation)
    check_block_rams("icebreaker", CoreGeometry(spec, bundle.fixed, 1), implementation)
