"""A board's top level: its clock (through a PLL where the profile's clock differs from the oscillator), the
SoC, the UART pins and the status LEDs. The twin runs the same SoC without this wrapper."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal, Value
from amaranth.lib import io

from poise.errors import PoiseError
from poise.rtl.soc import SoC


@dataclass(frozen=True)
class PllSetting:
    """One PLL configuration: ``kind`` names the primitive, ``parameters`` its attributes."""

    kind: str
    input_hz: int
    output_hz: int
    parameters: dict


# iCE40: `icepll -i 12 -o 24` (VCO 768 MHz). ECP5: `ecppll -i 25 -o 50` (25 / 1 × 2, VCO 600 MHz, phase
# detector at 25 MHz); no valid setting makes 48 MHz from 25 MHz.
PLLS = {
    ("ice40", 12_000_000, 24_000_000): PllSetting("SB_PLL40_PAD", 12_000_000, 24_000_000, {
        "p_FEEDBACK_PATH": "SIMPLE", "p_DIVR": 0, "p_DIVF": 63, "p_DIVQ": 5, "p_FILTER_RANGE": 1}),
    ("ecp5", 25_000_000, 50_000_000): PllSetting("EHXPLLL", 25_000_000, 50_000_000, {
        "p_CLKI_DIV": 1, "p_CLKFB_DIV": 2, "p_CLKOP_DIV": 12, "p_CLKOP_CPHASE": 5, "p_CLKOP_FPHASE": 0}),
}


class BoardTop(Elaboratable):
    """``soc`` on ``platform``: the ``sync`` domain at the SoC's clock, reset held until the PLL locks."""

    def __init__(self, soc: SoC) -> None:
        self.soc = soc

    def elaborate(self, platform) -> Module:  # noqa: ANN001 - an amaranth-boards platform
        m = Module()
        target = self.soc.config.clock_hz
        source_hz = int(platform.default_clk_frequency)
        family = "ice40" if "iCE40" in platform.device else "ecp5"
        m.domains.sync = ClockDomain("sync")
        clock = Signal()  # the sync domain's clock: nextpnr derives its constraint from the oscillator's
        m.d.comb += ClockSignal("sync").eq(clock)
        if source_hz == target:
            m.d.comb += clock.eq(self._input(m, "clock", platform.request(platform.default_clk, dir="-")))
        else:
            setting = PLLS.get((family, source_hz, target))
            if setting is None:
                known = ", ".join(f"{k[1] / 1e6:g} -> {k[2] / 1e6:g} MHz ({k[0]})" for k in PLLS)
                raise PoiseError(f"no PLL setting for {source_hz / 1e6:g} MHz to {target / 1e6:g} MHz on {family}; "
                                 f"known: {known}")
            locked = Signal()
            m.submodules.pll = self._pll(platform, setting, clock, locked)
            m.d.comb += ResetSignal("sync").eq(~locked)

        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0, dir="-")
        m.d.comb += soc.uart_rx.eq(self._input(m, "uart_rx", uart.rx))
        self._output(m, "uart_tx", uart.tx, soc.uart_tx)
        if ("rgb_led", 0) in platform.resources:  # OrangeCrab: red error, green busy, blue idle
            rgb = platform.request("rgb_led", 0, dir="-")
            for name, port, signal in (("r", rgb.r, soc.led_error), ("g", rgb.g, soc.led_busy),
                                       ("b", rgb.b, soc.led_idle)):
                self._output(m, f"led_{name}", port, signal)
        else:  # busy, error, idle on as many LEDs as the board has (the iCEBreaker: busy and error)
            leds = [platform.request("led", k, dir="-") for k in range(3) if ("led", k) in platform.resources]
            for k, (led, signal) in enumerate(zip(leds, (soc.led_busy, soc.led_error, soc.led_idle), strict=False)):
                self._output(m, f"led_{k}", led, signal)
        return m

    @staticmethod
    def _input(m: Module, name: str, port: io.PortLike) -> Value:
        """The value at an input pin (the resource's inversion applied)."""
        m.submodules[f"{name}_buffer"] = buffer = io.Buffer("i", port)
        return buffer.i

    @staticmethod
    def _output(m: Module, name: str, port: io.PortLike, value: Value) -> None:
        """Drive an output pin with ``value`` (the resource's inversion applied: an LED lights when it is 1)."""
        m.submodules[f"{name}_buffer"] = buffer = io.Buffer("o", port)
        m.d.comb += buffer.o.eq(value)

    @staticmethod
    def _pll(platform, setting: PllSetting, clock: Signal, locked: Signal) -> Elaboratable:  # noqa: ANN001
        """The PLL primitive: the iCE40's takes the oscillator's pad, the ECP5's its buffered input."""
        if setting.kind == "SB_PLL40_PAD":
            pad = platform.request(platform.default_clk, dir="-")
            return Instance("SB_PLL40_PAD", **setting.parameters, i_PACKAGEPIN=pad.io, i_RESETB=1, i_BYPASS=0,
                            o_PLLOUTGLOBAL=clock, o_LOCK=locked)
        oscillator = Signal()
        m = Module()
        m.d.comb += oscillator.eq(BoardTop._input(m, "oscillator", platform.request(platform.default_clk, dir="-")))
        m.submodules.pll = Instance("EHXPLLL", **setting.parameters, p_FEEDBK_PATH="CLKOP",
                                    p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED", i_CLKI=oscillator,
                                    i_CLKFB=clock, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
                                    i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_CLKOP=clock,
                                    o_LOCK=locked)
        return m
