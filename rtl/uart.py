"""UART transmitter and receiver: 8 data bits, LSB first, optional even or odd parity, one stop bit.

``divisor`` is clock cycles per bit (e.g. 12 MHz / 3 Mbaud = 4). The receiver synchronises ``rx`` with two
flip-flops, finds the start bit's falling edge and samples every bit in its middle; it counts framing errors
(stop bit low), parity errors and overruns (a byte completed while the previous one was still waiting on
``o``: the newer byte replaces it), saturating at the counters' width. A byte with a framing or parity error
is dropped, never delivered; after a framing error the receiver waits for the line to return high.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

PARITIES = ("none", "even", "odd")
COUNTER_BITS = 16


def _check(divisor: int, parity: str) -> None:
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor must be an int of at least 4 clock cycles per bit, not {divisor!r}")
    if parity not in PARITIES:
        raise ValueError(f"parity must be one of {', '.join(PARITIES)}, not {parity!r}")


def _parity_bit(data: Value, parity: str) -> Value:
    bit = data.xor()
    return ~bit if parity == "odd" else bit


class UARTTransmitter(wiring.Component):
    """Sends each byte taken from ``i`` on ``tx`` (idle high): start bit, 8 data bits LSB first, the parity
    bit if any, one stop bit, each ``divisor`` cycles long. ``i.ready`` is high while idle and in the last cycle
    of a stop bit, so bytes offered without a gap leave back to back (10 or 11 bits of ``divisor`` cycles each)."""

    def __init__(self, divisor: int, parity: str = "none") -> None:
        _check(divisor, parity)
        self.divisor, self.parity = divisor, parity
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        bits = 10 + (self.parity != "none")
        shifter = Signal(bits)
        remaining = Signal(range(bits + 1))
        timer = Signal(range(self.divisor))
        # A new byte loads in the last cycle of the previous stop bit, so frames go out back to back.
        last_tick = (remaining == 1) & (timer == self.divisor - 1)
        m.d.comb += self.i.ready.eq((remaining == 0) | last_tick)
        with m.If(remaining != 0):
            m.d.sync += self.tx.eq(shifter[0])
            with m.If(timer == self.divisor - 1):
                m.d.sync += [timer.eq(0), shifter.eq(shifter >> 1), remaining.eq(remaining - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer + 1)
        with m.If(self.i.ready & self.i.valid):
            frame = [0, self.i.payload]  # start bit, data
            if self.parity != "none":
                frame.append(_parity_bit(self.i.payload, self.parity))
            frame.append(1)  # stop bit
            m.d.sync += [shifter.eq(Cat(*frame)), remaining.eq(bits), timer.eq(0)]
        return m


class UARTReceiver(wiring.Component):
    """Receives bytes from ``rx`` into ``o`` (a one-byte buffer: ``o.valid`` holds until taken).

    Members
    -------
    rx : ``In(1)``
        The line, idle high (asynchronous: synchronised inside).
    o : ``Out(stream.Signature(8))``
        Received bytes.
    framing_errors, parity_errors, overruns : ``Out(16)``
        Saturating counts since reset.
    """

    def __init__(self, divisor: int, parity: str = "none") -> None:
        _check(divisor, parity)
        self.divisor, self.parity = divisor, parity
        super().__init__({
            "rx": In(1, init=1), "o": Out(stream.Signature(8)),
            "framing_errors": Out(COUNTER_BITS), "parity_errors": Out(COUNTER_BITS), "overruns": Out(COUNTER_BITS),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        divisor = self.divisor
        synced = Signal(2, init=0b11)
        m.d.sync += synced.eq((synced << 1) | self.rx)
        line = synced[1]
        data_bits = 8 + (self.parity != "none")
        shifter = Signal(data_bits)
        count = Signal(range(data_bits + 1))
        timer = Signal(range(divisor))

        def bump(counter: Signal) -> list:
            return [counter.eq(counter + (counter != (1 << COUNTER_BITS) - 1))]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM(name="receiver"):
            with m.State("IDLE"), m.If(~line):  # a falling edge: check the start bit in its middle
                m.d.sync += [timer.eq(divisor // 2 - 1), count.eq(0)]
                m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += timer.eq(divisor - 1)
                    m.next = "DATA"
                    with m.If(line):  # a glitch, not a start bit
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shifter.eq((shifter >> 1) | (line << (data_bits - 1))), count.eq(count + 1),
                                 timer.eq(divisor - 1)]
                    with m.If(count == data_bits - 1):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    data = shifter[:8]
                    parity_ok = Const(1) if self.parity == "none" else (_parity_bit(data, self.parity) == shifter[8])
                    with m.If(~line):
                        m.d.sync += bump(self.framing_errors)
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(~parity_ok):
                            m.d.sync += bump(self.parity_errors)
                        with m.Else():
                            with m.If(self.o.valid & ~self.o.ready):
                                m.d.sync += bump(self.overruns)
                            m.d.sync += [self.o.payload.eq(data), self.o.valid.eq(1)]
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"), m.If(line):  # after a framing error, wait for the line to go idle
                m.next = "IDLE"
        return m
