"""Memories whose reads never need a word written in the same cycle, and the check that they do not.

A block RAM with separate read and write ports (the iCE40's SB_RAM40_4K, the ECP5's DP16KD across its two
ports) does not define the word read at an address written in the same cycle. Yosys therefore builds logic
around every such memory that gives the behaviour the RTL states (the old word, or with ``transparent_for``
the new one): a register of the written word, an address comparison and a multiplexer per bit. Most of the
core's memories never read a word that matters in the cycle it is written, so that logic buys nothing.

A memory named with :data:`UNCLASHED` states that contract: its read port is not transparent, and a board
build (:func:`ignore_collisions`) tells Yosys that the word read on a collision is undefined. Simulation
reads the old word, so the contract is checked there: :func:`clash` gives, per memory, the cycles in which a
read whose word is used meets a write to its address, and the core collects them on its ``clash`` port
(sticky flags a board leaves unconnected, so synthesis drops them).
"""

from __future__ import annotations

from amaranth.hdl import Value, ValueCastable

UNCLASHED = "unclashed"
"""Part of the name of every memory whose used reads never meet a write to their address."""


def unclashed(name: str) -> str:
    """The memory name ``name`` marked with :data:`UNCLASHED`."""
    return f"{name}_{UNCLASHED}"


def ignore_collisions() -> str:
    """The Yosys command, run after reading the design, that makes the word read on a collision undefined for
    every read port of a memory named with :data:`UNCLASHED` (each has one write port), so that Yosys builds
    no logic to define it."""
    return f"setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:MEMID=*{UNCLASHED}* %i"


def clash(read_addr: Value | ValueCastable, write: object, used: Value) -> Value:
    """Whether, this cycle, a read at ``read_addr`` whose word is ``used`` meets a write of port ``write``
    (``addr``, ``en``) to the same address."""
    return used & write.en & (write.addr == read_addr)
