"""``poise flash`` without a board: the exact command on --dry-run, and "no <board> found on USB" with what to
check, never a raw CalledProcessError."""

from __future__ import annotations

import shutil

import pytest
from run_cli import poise

from poise.boards.flash import PROGRAMMERS


@pytest.mark.parametrize("board", sorted(PROGRAMMERS))
def test_dry_run_prints_the_exact_command(board, tmp_path):
    bitstream = tmp_path / "top.bit"
    status, out, _ = poise("flash", "--board", board, "--bitstream", bitstream, "--dry-run")
    assert status == 0
    expected = {"icebreaker": f"iceprog {bitstream}", "ulx3s": f"openFPGALoader -b ulx3s -m {bitstream}",
                "orangecrab": f"dfu-util -a 0 -D {bitstream}"}[board]
    assert out.strip() == expected


@pytest.mark.parametrize("board", sorted(PROGRAMMERS))
def test_no_board_attached_is_a_clear_error(board, tmp_path):
    tool = PROGRAMMERS[board].command[0]
    assert shutil.which(tool), f"{tool} is installed by ./run install (Debian package {PROGRAMMERS[board].package})"
    bitstream = tmp_path / "top.bit"
    bitstream.write_bytes(b"\xff" * 64)
    status, _, err = poise("flash", "--board", board, "--bitstream", bitstream)
    assert status == 1
    assert f"no {board} found on USB" in err and PROGRAMMERS[board].usb_id in err and "lsusb" in err
    assert "Traceback" not in err and "CalledProcessError" not in err


def test_a_missing_bitstream_says_how_to_build_one(tmp_path):
    status, _, err = poise("flash", "--board", "icebreaker", "--bitstream", tmp_path / "none.bin")
    assert status == 1 and "poise build --board icebreaker" in err
