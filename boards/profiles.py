"""What poise builds for each board besides the network: the system clock, the UART baud rate, the synapse
lanes, and the bundle a fresh build carries when none is given. ``poise twin`` and ``poise stream --twin``
use the same profile, so the twin runs the board's own SoC at the board's own clock and divisor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poise.boards.memory import BOARDS
from poise.embedded import ORANGECRAB_BUNDLE, ULX3S_BUNDLE, embedded_bundle
from poise.errors import PoiseError
from poise.rtl.implementation import Implementation
from poise.rtl.soc import SoCConfig


@dataclass(frozen=True)
class BoardProfile:
    """A board's build parameters; ``bundle`` is None when no embedded network suits it."""

    name: str
    soc: SoCConfig
    bundle: Path | None

    @property
    def boot_loaded(self) -> bool:
        """Whether the board comes out of configuration without W₀ (in SPRAM, which the bitstream cannot
        initialise): the host loads the weights before the first image."""
        return self.soc.implementation.single_port_w0

    def default_bundle(self) -> Path:
        if self.bundle is None:
            raise PoiseError(f"poise ships no network sized for the {BOARDS[self.name].name}: pass --bundle FILE "
                             "(a fixed-point bundle from poise quantize)")
        return self.bundle


PROFILES: dict[str, BoardProfile] = {
    # iCEBreaker: the 12 MHz oscillator through the PLL to 24 MHz; its FTDI takes 3 Mbaud (8 cycles per bit).
    # At 24 MHz the deep neuron pipeline's registers cost logic cells and buy nothing, and the UP5K's eight
    # DSP blocks are the neuron pipeline's: the lane's products are logic. One lane: each lane costs logic
    # cells and EBRs (its neuron banks) the UP5K lacks. W₀ lives in the four SPRAMs, two weights to a word
    # (50,176 words of the 65,536); the host loads it after configuration. Packets of
    # at most 1,024 bytes (a raw image is 784) keep the frame receiver in two EBRs instead of four.
    "icebreaker": BoardProfile("icebreaker", SoCConfig(
        clock_hz=24_000_000, baud=3_000_000, lanes=1, max_body=1024,
        implementation=Implementation(shallow_neuron=True, logic_products=True, single_port_w0=True)),
                               embedded_bundle()),
    # OrangeCrab: 48 MHz oscillator; a USB-serial adapter on the header pins at 3 Mbaud (16 cycles per bit).
    # 784-128-10 needs 76 block RAMs in the core's memory map and the 25F has 56: it carries 784-64-10, at
    # 4 lanes: at 8 it needs 29 of the 28 multipliers (docs/BOARDS.md).
    "orangecrab": BoardProfile("orangecrab", SoCConfig(clock_hz=48_000_000, baud=3_000_000, lanes=4),
                               embedded_bundle(ORANGECRAB_BUNDLE)),
    # ULX3S: 25 MHz oscillator through the PLL to 50 MHz; its FT231X at 2 Mbaud, a rate both ends make
    # exactly (25 cycles per bit; 3 Mbaud would be 16.7).
    # It carries the paper's 784-500-10 at 4 lanes: W₀'s banks take 192 of the 208 block RAMs (at 8 lanes, 200:
    # a row of 500 weights is 63 words of 8), so the memories of at most 4 kbit (the per-neuron banks, the
    # schedule ROMs) go to LUT RAM and logic (docs/BOARDS.md).
    "ulx3s": BoardProfile("ulx3s", SoCConfig(clock_hz=50_000_000, baud=2_000_000, lanes=4,
                                             implementation=Implementation(distributed_bits=4096)),
                           embedded_bundle(ULX3S_BUNDLE)),
}


def board_profile(name: str) -> BoardProfile:
    if name not in PROFILES:
        raise PoiseError(f"unknown board {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
