"""The system on the FPGA, generic over the board: UART, a receive FIFO, the command controller and the
network core. A board's top level (``poise.boards``) adds the clock, the pins and the LEDs; the twin
(``poise.sim.twin``) runs this very module, verilated, behind a pseudo-terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from poise.errors import PoiseError
from poise.firmware.framing import MAX_BODY
from poise.firmware.messages import Info
from poise.rtl.controller import CommandController
from poise.rtl.core import NetworkCore
from poise.rtl.geometry import CoreGeometry
from poise.rtl.implementation import GENERIC, Implementation
from poise.rtl.uart import UARTReceiver, UARTTransmitter

BAUD_TOLERANCE = 0.02
"""Largest relative difference between the requested baud rate and clock / divisor."""


@dataclass(frozen=True)
class SoCConfig:
    """What a build fixes besides the network: the clock, the UART, the receive FIFO, the lanes and the
    gateware's :class:`~poise.rtl.implementation.Implementation` for the device."""

    clock_hz: int
    baud: int
    lanes: int = 8
    fifo_depth: int = 512
    max_body: int = MAX_BODY
    implementation: Implementation = GENERIC

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit; refuses a baud rate the clock cannot make within 2 %."""
        divisor = round(self.clock_hz / self.baud)
        if divisor < 4 or abs(self.clock_hz / divisor - self.baud) > BAUD_TOLERANCE * self.baud:
            raise PoiseError(f"a {self.clock_hz / 1e6:g} MHz clock cannot make {self.baud} baud (needs at least 4 "
                             f"cycles per bit within {BAUD_TOLERANCE:.0%}); pick a baud rate near clock / n")
        return divisor


def device_info(geometry: CoreGeometry, config: SoCConfig) -> Info:
    """What INFO answers for this network and build."""
    return Info.describe(geometry.spec, geometry.fixed, geometry.lanes, config.clock_hz, config.baud,
                         config.max_body)


class SoC(wiring.Component):
    """The network of ``geometry`` behind the UART protocol of docs/PROTOCOL.md.

    Members
    -------
    uart_rx : ``In(1)``, uart_tx : ``Out(1)``
        The serial line, idle high (``uart_rx`` is synchronised inside).
    busy : ``Out(1)``
        Work in progress: a byte waiting or being received, a request being handled, a reply being sent.
    led_idle, led_busy, led_error : ``Out(1)``
        Status: waiting; handling a request; an error reply or UART error in the last ~quarter second.
    """

    def __init__(self, geometry: CoreGeometry, weights: list[np.ndarray], biases: list[np.ndarray],
                 config: SoCConfig) -> None:
        self.geometry, self.config = geometry, config
        self.divisor = config.divisor
        self.info = device_info(geometry, config)
        self.core = NetworkCore(geometry, weights, biases, config.implementation)
        super().__init__({
            "uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "busy": Out(1),
            "led_idle": Out(1), "led_busy": Out(1), "led_error": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        config = self.config
        m.submodules.receiver = receiver = UARTReceiver(self.divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(self.divisor)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=config.fifo_depth)
        m.submodules.controller = controller = CommandController(self.geometry, self.info.encode(), config.max_body)
        core = self.core
        m.submodules.core = ResetInserter(controller.core_reset)(core)

        m.d.comb += [receiver.rx.eq(self.uart_rx), self.uart_tx.eq(transmitter.tx)]
        wiring.connect(m, receiver.o, fifo.w_stream)
        wiring.connect(m, fifo.r_stream, controller.rx)
        wiring.connect(m, controller.tx, transmitter.i)
        for name in ("command", "pixels", "parameter_request"):
            wiring.connect(m, getattr(controller, name), getattr(core, name))
        for name in ("result", "parameter_response"):
            wiring.connect(m, getattr(core, name), getattr(controller, name))
        m.d.comb += [controller.framing_errors.eq(receiver.framing_errors),
                     controller.parity_errors.eq(receiver.parity_errors), controller.overruns.eq(receiver.overruns)]

        # Status: busy from the first byte to the last bit of the reply; errors held for about 1/4 s.
        uart_errors = receiver.framing_errors + receiver.parity_errors + receiver.overruns
        previous_errors = Signal.like(uart_errors)
        m.d.sync += previous_errors.eq(uart_errors)
        hold_cycles = max(config.clock_hz // 4, 2)
        hold = Signal(range(hold_cycles))
        with m.If(controller.error | (uart_errors != previous_errors)):
            m.d.sync += hold.eq(hold_cycles - 1)
        with m.Elif(hold != 0):
            m.d.sync += hold.eq(hold - 1)
        busy = receiver.o.valid | fifo.r_stream.valid | controller.busy | ~transmitter.i.ready
        m.d.comb += [self.busy.eq(busy), self.led_busy.eq(busy), self.led_idle.eq(~busy),
                     self.led_error.eq(hold != 0)]
        return m
