"""Run code in a fresh Python interpreter: for checks on what a new process imports or pays once."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def fresh_python(code: str, *, timeout_s: float = 120) -> list[str]:
    """The stdout lines of ``code`` (dedented) run by a new interpreter; fails the test if it exits non-zero."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout_s)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()
