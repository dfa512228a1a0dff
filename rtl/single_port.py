"""Weight banks that share one single-ported memory: each word holds the P banks' weights side by side (and,
where they are narrower than a :data:`WORD_BITS` word, several consecutive addresses of them), and reads and
writes take turns on one address, as the iCE40UP5K's SPRAM (SB_SPRAM256KA) has it.

The banks are presented as if each had a read port and a write port of its own (``addr``, ``data`` and, for
writes, ``en``), so the core drives them like memory ports. The contract the core keeps:
- every bank reads at the same address (W₀ is not skewed: a row's P weights share a word);
- every bank written in a cycle is written at the same address;
- a cycle that writes does not read: the read data keeps the word of the last read (the SPRAM's
  ``no_change`` behaviour), so the core must not need a new word in that cycle.

Synthesis maps such a memory to SPRAM only without initial contents, which the bitstream cannot set: the
board build deletes them (:data:`BOOT_LOADED`) and the host loads the weights after configuration. Simulation
keeps them, so the twin starts as the board does after that load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib.memory import Memory

BOOT_LOADED = "boot_loaded"
"""Part of the name of every memory whose initial contents a board build drops (see :func:`drop_initial_contents`)."""


def drop_initial_contents() -> str:
    """The Yosys command, run after reading the design, that deletes the initial contents of the memories
    named with :data:`BOOT_LOADED`, so that they can map to RAMs the bitstream does not initialise."""
    return f"delete t:$meminit_v2 r:MEMID=*{BOOT_LOADED}* %i"


@dataclass(frozen=True)
class BankRead:
    """One bank's view of the shared read port: ``data`` is the bank's weight of the word read at ``addr``."""

    addr: Signal
    data: Signal


@dataclass(frozen=True)
class BankWrite:
    """One bank's view of the shared write port: with ``en``, its weight of the word at ``addr`` becomes ``data``."""

    addr: Signal
    data: Signal
    en: Signal


WORD_BITS = 16
"""The width of the UP5K's SPRAM words; narrower bank words are packed several to a word."""


def packing(lanes: int, width: int) -> int:
    """How many addresses of each bank one memory word holds: as many as fill :data:`WORD_BITS` (a power of
    two, at least one)."""
    pack = 1
    while 2 * pack * lanes * width <= WORD_BITS:
        pack *= 2
    return pack


def single_port_banks(m: Module, name: str, shape: Shape, image: np.ndarray) -> list[tuple[BankRead, BankWrite]]:
    """Banks of ``shape`` words with initial contents ``image`` (banks × depth raw values), in one memory
    ``name`` + :data:`BOOT_LOADED` whose word holds :func:`packing` consecutive addresses of every bank, one
    port: a cycle with any bank's ``en`` writes (at the address of the lowest bank that writes) and does not
    read."""
    shape = Shape.cast(shape)
    lanes, depth = image.shape
    width, mask = shape.width, (1 << shape.width) - 1
    pack = packing(lanes, width)
    image = np.asarray(image, np.int64)
    image = np.pad(image, ((0, 0), (0, -depth % pack)))
    # Word w, slot (j, bank) at bit (j·lanes + bank)·width: address w·pack + j of the bank.
    words = [sum((int(image[bank, word * pack + j]) & mask) << ((j * lanes + bank) * width)
                 for j in range(pack) for bank in range(lanes))
             for word in range(image.shape[1] // pack)]
    mem = Memory(shape=unsigned(width * lanes * pack), depth=len(words), init=words)
    m.submodules[f"{name}_{BOOT_LOADED}"] = mem
    write, read = mem.write_port(granularity=width), mem.read_port(transparent_for=())

    def signal(shape: Shape | range | None, what: str, bank: int) -> Signal:
        return Signal(shape, name=f"{name}_{what}{bank}")

    banks = [(BankRead(signal(range(depth), "read_addr", bank), signal(shape, "data", bank)),
              BankWrite(signal(range(depth), "write_addr", bank), signal(shape, "write", bank),
                        signal(None, "write_en", bank)))
             for bank in range(lanes)]
    writes = [bank_write for _, bank_write in banks]
    writing = Signal(name=f"{name}_writing")
    address: Value = banks[0][0].addr
    for bank_write in reversed(writes):
        address = Mux(bank_write.en, bank_write.addr, address)
    shift = pack.bit_length() - 1
    slot = Signal(range(pack), name=f"{name}_slot")  # of the word being read: held with the read data
    m.d.comb += [
        writing.eq(Cat(bank_write.en for bank_write in writes).any()),
        write.addr.eq(address >> shift), read.addr.eq(address >> shift), read.en.eq(~writing),
        write.en.eq(Cat(bank_write.en & (address[:shift] == j if shift else 1)
                        for j in range(pack) for bank_write in writes)),
        write.data.eq(Cat(bank_write.data for _ in range(pack) for bank_write in writes)),
    ]
    if shift:
        with m.If(~writing):
            m.d.sync += slot.eq(address[:shift])
    by_slot = [Cat(read.data[(j * lanes + bank) * width:(j * lanes + bank + 1) * width] for bank in range(lanes))
               for j in range(pack)]
    chosen = Signal(width * lanes, name=f"{name}_chosen")
    m.d.comb += chosen.eq(Array(by_slot)[slot] if shift else by_slot[0])
    for bank, (bank_read, _) in enumerate(banks):
        m.d.comb += bank_read.data.eq(chosen[bank * width:(bank + 1) * width])
    return banks
