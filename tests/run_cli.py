"""Run the ``poise`` command line from tests, in this process or as a separate program."""

import contextlib
import io
import subprocess
import sys

from poise import cli


def poise(*argv: object) -> tuple[int, str, str]:
    """Run the CLI in this process; returns (exit status, stdout, stderr). Other exceptions propagate."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main([str(arg) for arg in argv])
        except SystemExit as exit_:  # argparse
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def poise_process(*argv: object) -> subprocess.CompletedProcess:
    """Run the CLI as a separate program, as a user would."""
    return subprocess.run([sys.executable, "-m", "poise", *map(str, argv)], capture_output=True, text=True,
                          timeout=120, check=False)
