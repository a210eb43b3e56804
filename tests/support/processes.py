"""Child processes in tests: leave no pipe open behind them."""

from __future__ import annotations

import subprocess


def close_pipes(proc: subprocess.Popen[bytes]) -> None:
    """Close the pipes of a finished child (an open pipe is a ResourceWarning, an error here)."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
