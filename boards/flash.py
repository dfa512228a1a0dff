"""Flash a bitstream with the board's own programmer, and say plainly when no board is there."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from poise.errors import PoiseError


@dataclass(frozen=True)
class Programmer:
    """How a board is flashed: the command (``{bitstream}`` replaced), the Debian package of its tool, the
    USB id the board shows, and what the tool verifies."""

    command: tuple[str, ...]
    package: str
    usb_id: str
    usb_name: str
    verifies: str


PROGRAMMERS = {
    # iceprog writes the SPI flash and reads it back to verify.
    "icebreaker": Programmer(("iceprog", "{bitstream}"), "fpga-icestorm", "0403:6010", "FTDI FT2232H",
                             "iceprog reads the flash back and compares"),
    # openFPGALoader -m loads the FPGA's SRAM (lost at power-off); --verify needs a flash write (-f).
    "ulx3s": Programmer(("openFPGALoader", "-b", "ulx3s", "-m", "{bitstream}"), "openfpgaloader", "0403:6015",
                        "FTDI FT231X", "SRAM loading is checked by the FPGA's own CRC (DONE goes high)"),
    # dfu-util writes the bitstream to the bootloader's flash slot; press the button while plugging in.
    "orangecrab": Programmer(("dfu-util", "-a", "0", "-D", "{bitstream}"), "dfu-util", "1209:5af0",
                             "OrangeCrab DFU bootloader", "dfu-util checks each block's transfer status"),
}


def programmer(board: str) -> Programmer:
    if board not in PROGRAMMERS:
        raise PoiseError(f"unknown board {board!r}; choose one of {', '.join(PROGRAMMERS)}")
    return PROGRAMMERS[board]


def flash_command(board: str, bitstream: Path) -> list[str]:
    return [part.replace("{bitstream}", str(bitstream)) for part in programmer(board).command]


def flash(board: str, bitstream: Path) -> str:
    """Runs the programmer; returns its output. Raises :class:`PoiseError` for a missing bitstream or tool,
    and, when the tool finds no board, "no <board> found on USB" with what to check."""
    tool = programmer(board)
    if not Path(bitstream).is_file():
        raise PoiseError(f"no bitstream at {bitstream}: build one with poise build --board {board}")
    command = flash_command(board, bitstream)
    if shutil.which(command[0]) is None:
        raise PoiseError(f"{command[0]} is not installed: ./run install installs it (Debian package {tool.package})")
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        tail = "\n  ".join(output.splitlines()[-4:])
        raise PoiseError(
            f"no {board} found on USB ({' '.join(command)} exited with status {result.returncode}). Check:\n"
            f"- the USB cable (a data cable, not a charge-only one) and that the board is powered;\n"
            f"- that `lsusb` lists {tool.usb_id} ({tool.usb_name});\n"
            f"- the udev rules: your user needs access to that device (or run as root);\n"
            + ("- that the OrangeCrab is in its bootloader (hold the button while plugging it in);\n"
               if board == "orangecrab" else "")
            + f"The tool said:\n  {tail}")
    return output
