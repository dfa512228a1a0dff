"""CRC-16/CCITT-FALSE over a byte stream, one byte per cycle: the device side of
:func:`poise.firmware.framing.crc16`."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from poise.firmware.framing import CRC_INIT, CRC_POLY


def crc16_byte(m: Module, crc: Value, byte: Value) -> Value:
    """The CRC after one more byte: eight bit-serial steps of the polynomial, unrolled into XOR logic (each
    step a signal of its own, so the expression does not double with every step)."""
    for bit in reversed(range(8)):
        step = Signal(16, name=f"crc_step{bit}")
        m.d.comb += step.eq((crc << 1)[:16] ^ ((crc[15] ^ byte[bit]).replicate(16) & CRC_POLY))
        crc = step
    return crc


class Crc16(wiring.Component):
    """``crc`` is the CRC of the bytes given with ``valid`` since the last ``clear`` (or reset); ``clear``
    restarts it at 0xFFFF. Give ``clear`` and ``valid`` in different cycles: a byte given with ``clear``
    continues the old CRC and the restart is lost (the iCE40 then folds the restart into its flip-flops'
    synchronous set instead of a multiplexer before the XOR logic)."""

    def __init__(self) -> None:
        super().__init__({"data": In(8), "valid": In(1), "clear": In(1), "crc": Out(16, init=CRC_INIT)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        following = crc16_byte(m, self.crc, self.data)
        with m.If(self.valid):
            m.d.sync += self.crc.eq(following)
        with m.Elif(self.clear):
            m.d.sync += self.crc.eq(CRC_INIT)
        return m
