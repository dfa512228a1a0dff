"""How the gateware is built for a device, where the choice changes area and timing but never a bit of
behaviour: which memories stay out of block RAM, how deep the neuron pipeline is, which products are built
from logic, and whether W₀ is single-ported (for the UP5K's SPRAM, which the bitstream cannot initialise: the
one difference, the host loads W₀ after configuration).

Yosys puts every memory it can in block RAM. On a device whose block RAMs the weights fill (the paper's
784-500-10 on the ECP5-85F), the small per-neuron banks and the schedule ROMs, each far smaller than one
block, must go to LUT RAM or logic instead. On a small device at a low clock (the iCE40UP5K at 24 MHz), the
registers of a deep neuron pipeline cost more logic cells than the timing needs, and its eight DSP blocks are
the neuron pipeline's. Simulation runs either.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Shape, ShapeCastable


@dataclass(frozen=True)
class Implementation:
    """Memories of at most ``distributed_bits`` bits (depth × width) are marked for LUT RAM (RAMs, Yosys'
    ``ram_style = "distributed"``) or logic (ROMs, ``rom_style = "logic"``); 0 leaves every memory to the
    synthesiser. ``shallow_neuron`` builds :class:`~poise.rtl.neuron.NeuronUpdate` with its
    :data:`~poise.rtl.neuron.SHALLOW` register stages instead of all of them. ``logic_products`` builds the
    synapse lanes' products by the pixel from logic, not DSP blocks (:class:`~poise.rtl.synapse.SynapseLane`).
    ``single_port_w0`` keeps W₀ in one single-ported memory, its P banks side by side (:mod:`poise.rtl.single_port`,
    current-mode input only), which a board build maps to the UP5K's SPRAM without initial contents: there
    the host loads W₀ after configuration, the one thing a board does differently from its twin."""

    distributed_bits: int = 0
    shallow_neuron: bool = False
    logic_products: bool = False
    single_port_w0: bool = False

    def memory_attrs(self, shape: Shape | ShapeCastable, depth: int, rom: bool = False) -> dict[str, str]:
        """The attributes of a memory of ``depth`` words of ``shape``."""
        bits = Shape.cast(shape).width * depth
        if bits > self.distributed_bits:
            return {}
        return {"rom_style": "logic"} if rom else {"ram_style": "distributed"}


GENERIC = Implementation()
"""Every memory left to the synthesiser, the full neuron pipeline."""
