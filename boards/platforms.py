"""The amaranth-boards platform of each supported board, extended where poise needs more."""

from __future__ import annotations

from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from poise.errors import PoiseError

ORANGECRAB_UART = Resource(
    "uart", 0,
    Subsignal("tx", Pins("1", dir="o", conn=("io", 0))),
    Subsignal("rx", Pins("0", dir="i", conn=("io", 0))),
    Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"),
)
"""The OrangeCrab r0.2 has no UART: poise puts one on its Feather header, TX on pin 1 and RX on pin 0 (3.3 V),
wired to a USB-serial adapter's RX and TX, grounds joined (docs/BOARDS.md)."""


def board_platform(name: str):  # noqa: ANN201 - an amaranth-boards platform instance
    """The platform of board ``name``, with poise's additions."""
    if name == "icebreaker":
        return ICEBreakerPlatform()
    if name == "ulx3s":
        return ULX3S_85F_Platform()
    if name == "orangecrab":
        platform = OrangeCrabR0_2_25FPlatform()
        platform.add_resources([ORANGECRAB_UART])
        return platform
    raise PoiseError(f"unknown board {name!r}; choose one of icebreaker, orangecrab, ulx3s")
