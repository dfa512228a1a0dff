"""The twin: an echo design (UART receiver straight into the transmitter) verilated with the pty harness,
driven through pyserial; the link, the build cache, build failures, start failures and the ways it exits."""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import serial
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from poise.errors import PoiseError
from poise.rtl.uart import UARTReceiver, UARTTransmitter
from poise.sim.cocotb_runner import component_verilog
from poise.sim.twin import Twin, build_twin

DIVISOR = 4


class EchoTop(wiring.Component):
    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = UARTReceiver(DIVISOR)
        m.submodules.transmitter = transmitter = UARTTransmitter(DIVISOR)
        wiring.connect(m, receiver.o, transmitter.i)
        m.d.comb += [
            receiver.rx.eq(self.uart_rx),
            self.uart_tx.eq(transmitter.tx),
            self.busy.eq(receiver.o.valid | ~transmitter.i.ready),
        ]
        return m


@pytest.fixture(scope="module")
def echo_verilog() -> str:
    return component_verilog(EchoTop(), "top")


@pytest.fixture(scope="module")
def echo_twin(echo_verilog) -> Path:
    return build_twin(echo_verilog, name="twin_echo").executable


def test_round_trip_of_random_bytes_is_lossless(echo_twin):
    rng = random.Random(1234)
    payload = bytes(range(256)) + rng.randbytes(20_000 - 256)
    with Twin(echo_twin, divisor=DIVISOR) as twin, serial.Serial(twin.port, timeout=30) as port:
        start = time.perf_counter()
        for offset in range(0, len(payload), 1000):
            port.write(payload[offset:offset + 1000])
        echoed = port.read(len(payload))
        elapsed = time.perf_counter() - start
    assert len(echoed) == len(payload)
    assert echoed == payload
    print(f"\ntwin echo: {len(payload)} bytes each way in {elapsed:.3f} s = {len(payload) / elapsed / 1e3:.0f} kB/s; "
          f"{twin.stderr_text().strip()}")
    assert "cycles simulated" in twin.stderr_text()
    assert twin.returncode == 0


def test_link_exists_while_running_and_is_removed_after(echo_twin, tmp_path):
    link = tmp_path / "ttyTWIN"
    link.symlink_to(tmp_path / "stale")  # a leftover link is replaced
    with Twin(echo_twin, link=link) as twin:
        assert twin.port == str(link)
        assert link.is_symlink()
        assert str(link.readlink()).startswith("/dev/pts/")
        with serial.Serial(twin.port, timeout=5) as port:
            port.write(b"\x00hello\xff")
            assert port.read(7) == b"\x00hello\xff"
    assert not link.exists()
    assert not link.is_symlink()


def test_idle_twin_sleeps(echo_twin):
    with Twin(echo_twin) as twin:
        time.sleep(0.1)
        before = _cpu_seconds(twin.pid)
        time.sleep(0.5)
        used = _cpu_seconds(twin.pid) - before
    assert used < 0.1, f"an idle twin used {used:.2f} s of CPU in 0.5 s"


def test_twin_exits_cleanly_on_stdin_eof_and_signals(echo_twin):
    process = subprocess.Popen([echo_twin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"PTY /dev/pts/")
    process.stdin.close()
    assert process.wait(timeout=5) == 0
    assert b"stopped by stdin closed" in process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    process = subprocess.Popen([echo_twin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"PTY /dev/pts/")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=5) == 0
    assert b"stopped by signal" in process.stderr.read()
    for stream in (process.stdin, process.stdout, process.stderr):
        stream.close()


def test_second_build_is_cached(echo_verilog, echo_twin):
    start = time.perf_counter()
    build = build_twin(echo_verilog, name="twin_echo")
    assert not build.built
    assert build.executable == echo_twin
    assert time.perf_counter() - start < 2


def test_broken_verilog_raises_naming_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("POISE_SIM_CACHE", str(tmp_path))
    with pytest.raises(PoiseError, match=r"build\.log") as caught:
        build_twin("module top(input clk);\n  this is not verilog\nendmodule\n", name="broken")
    log = next(tmp_path.glob("broken-*/build.log"))
    assert str(log) in str(caught.value)
    assert "syntax error" in str(caught.value)


def test_twin_that_exits_at_once_raises():
    start = time.perf_counter()
    twin = Twin(Path("/bin/false"), start_timeout=10)
    with pytest.raises(PoiseError, match="exited"):
        twin.start()
    assert time.perf_counter() - start < 5
    twin.close()  # idempotent


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
