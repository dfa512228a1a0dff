"""On-chip memory of the supported boards, and whether a fixed-point network fits in it.

The network needs, in bits (formats from its :class:`~poise.golden.fixed.FixedPointSpec`):
- weights, each stored once (the core reads the symmetric matrices both ways), and biases;
- per non-input neuron five state words: s, v, φ, ρ(sᵗ⁻¹) and the free-phase s⁻ kept for learning;
- the schedule ROMs (ε, λ, 1/λ per step).

Weights go to the largest memory of the device (the UP5K's SPRAM, the ECP5's block RAM), state and ROMs to
the other (the UP5K's EBR) or to what the weights leave (ECP5). Capacities are raw bits; how memory ports
pack words is the RTL's business and may cost a little more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from poise.errors import PoiseError
from poise.golden.fixed import FixedPointSpec
from poise.rtl.geometry import CoreGeometry
from poise.rtl.implementation import GENERIC, Implementation
from poise.rtl.single_port import WORD_BITS, packing

STATE_WORDS = ("state", "decoded", "encoder", "state", "state")  # s, v, φ, ρ_prev, s⁻


@dataclass(frozen=True)
class Memory:
    kind: str
    bits: int


@dataclass(frozen=True)
class BoardMemory:
    """A board's FPGA and its on-chip RAMs, largest first."""

    name: str
    device: str
    memories: tuple[Memory, ...]


@dataclass(frozen=True)
class BlockRam:
    """A device's block RAM primitive as nextpnr counts it (``cell``), how many there are, and the
    (depth, width) shapes one block can take."""

    cell: str
    count: int
    shapes: tuple[tuple[int, int], ...]

    @property
    def bits(self) -> int:
        """The raw bits of all blocks (each as wide as its widest shape)."""
        return self.count * max(depth * width for depth, width in self.shapes)

    def blocks(self, depth: int, width: int) -> int:
        """Blocks for one memory of ``depth`` words × ``width`` bits, in its best shape."""
        return min(-(-width // w) * -(-depth // d) for d, w in self.shapes)


_EBR = ((256, 16), (512, 8), (1024, 4), (2048, 2))  # SB_RAM40_4K
_DP16KD = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))
BLOCK_RAMS = {
    "icebreaker": BlockRam("ICESTORM_RAM", 30, _EBR),
    "orangecrab": BlockRam("DP16KD", 56, _DP16KD),
    "ulx3s": BlockRam("DP16KD", 208, _DP16KD),
}
"""The block RAMs the core's memories map to (besides the UP5K's SPRAM, which only a single-ported W₀ takes)."""

SPRAM_DEPTH = 16 * 1024
"""Words of one UP5K SPRAM (SB_SPRAM256KA), each :data:`~poise.rtl.single_port.WORD_BITS` wide."""
SPRAMS = 4


BOARDS: dict[str, BoardMemory] = {
    "icebreaker": BoardMemory("iCEBreaker", "iCE40UP5K", (Memory("SPRAM", SPRAMS * SPRAM_DEPTH * WORD_BITS),
                                                          Memory("EBR", BLOCK_RAMS["icebreaker"].bits))),
    "orangecrab": BoardMemory("OrangeCrab r0.2 25F", "ECP5 LFE5U-25F", (Memory("EBR", BLOCK_RAMS["orangecrab"].bits),)),
    "ulx3s": BoardMemory("ULX3S 85F", "ECP5 LFE5U-85F", (Memory("EBR", BLOCK_RAMS["ulx3s"].bits),)),
}


@dataclass(frozen=True)
class MemoryNeeds:
    """Bits a network needs: parameters (weights and biases), neuron state and schedule ROMs."""

    weights: int
    weight_bits: int
    parameter_bits: int
    state_bits: int
    rom_bits: int


def memory_needs(layers: tuple[int, ...], fixed: FixedPointSpec) -> MemoryNeeds:
    weights = sum(a * b for a, b in pairwise(layers))
    neurons = sum(layers[1:])
    parameter_bits = weights * fixed.weight.width + neurons * fixed.bias.width
    state_bits = neurons * sum(getattr(fixed, word).width for word in STATE_WORDS)
    rom_word = fixed.epsilon_format.width
    if fixed.lambda_rom is not None:
        rom_word += fixed.lambda_format.width + fixed.inv_lambda_format.width
    return MemoryNeeds(weights, fixed.weight.width, parameter_bits, state_bits, fixed.steps * rom_word)


def fits(board: BoardMemory, needs: MemoryNeeds) -> bool:
    big, rest = board.memories[0], board.memories[1:]
    if rest:
        return needs.parameter_bits <= big.bits and needs.state_bits + needs.rom_bits <= sum(m.bits for m in rest)
    return needs.parameter_bits + needs.state_bits + needs.rom_bits <= big.bits


def check_fit(board_name: str, layers: tuple[int, ...], fixed: FixedPointSpec) -> MemoryNeeds:
    """The network's needs; a :class:`PoiseError` with the numbers (and the largest hidden layer that would
    fit, for one-hidden-layer networks) when it does not fit the board."""
    if board_name not in BOARDS:
        raise PoiseError(f"unknown board {board_name!r}; choose one of {', '.join(BOARDS)}")
    board = BOARDS[board_name]
    needs = memory_needs(layers, fixed)
    if fits(board, needs):
        return needs
    arch = "-".join(map(str, layers))
    memories = " + ".join(f"{mbit(m.bits)} of {m.kind}" for m in board.memories)
    message = (
        f"{arch} needs {needs.weights / 1000:.0f} k weights × {needs.weight_bits} bit = "
        f"{mbit(needs.weights * needs.weight_bits)} (parameters {mbit(needs.parameter_bits)}, neuron state "
        f"{mbit(needs.state_bits)}, ROMs {mbit(needs.rom_bits)}); {board.device} on the {board.name} has {memories}"
    )
    if len(layers) == 3:
        hidden = largest_hidden(layers, lambda smaller: fits(board, memory_needs(smaller, fixed)))
        message += (f"; the largest hidden layer that fits is {hidden} ({layers[0]}-{hidden}-{layers[2]})"
                    if hidden else "; not even one hidden neuron fits")
    raise PoiseError(message + ". Train a smaller network or pick a larger board.")


def mbit(bits: int) -> str:
    return f"{bits / 2**20:.2f} Mbit" if bits >= 2**20 else f"{bits / 1024:.0f} kbit"


def largest_hidden(layers: tuple[int, ...], fits: Callable[[tuple[int, ...]], bool]) -> int | None:
    """The largest hidden layer below ``layers[1]`` of a one-hidden-layer network that ``fits``, or None."""
    return next((h for h in range(layers[1] - 1, 0, -1) if fits((layers[0], h, layers[2]))), None)


def weight_block_rams(board_name: str, geometry: CoreGeometry, implementation: Implementation = GENERIC) -> int:
    """Block RAMs the core's weight banks take at least on the board: P banks per matrix of
    :meth:`~poise.rtl.geometry.CoreGeometry.bank_depth` words of one weight (W₀ not, when ``implementation``
    keeps it single-ported: that goes to SPRAM, :func:`weight_sprams`). The rest of the design needs more; this
    is the part known before synthesis."""
    ram = BLOCK_RAMS[board_name]
    return sum(geometry.lanes * ram.blocks(geometry.bank_depth(layer), geometry.fixed.weight.width)
               for layer in range(geometry.matrices) if layer or not implementation.single_port_w0)


def single_port_w0_words(geometry: CoreGeometry) -> tuple[int, int]:
    """A single-ported W₀'s memory: (weights per word, words). A word holds P weights of a row word, as many
    row words as fill :data:`~poise.rtl.single_port.WORD_BITS` (:func:`~poise.rtl.single_port.packing`)."""
    pack = packing(geometry.lanes, geometry.fixed.weight.width)
    return geometry.lanes * pack, -(-geometry.bank_depth(0) // pack)


def weight_sprams(geometry: CoreGeometry, implementation: Implementation) -> int:
    """The UP5K SPRAMs a single-ported W₀ takes (none for banks in block RAM)."""
    if not implementation.single_port_w0:
        return 0
    weights, words = single_port_w0_words(geometry)
    return -(-weights * geometry.fixed.weight.width // WORD_BITS) * -(-words // SPRAM_DEPTH)
