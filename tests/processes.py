"""Stopping the service's processes in tests the way systemd or Kubernetes does: SIGTERM, then wait."""

from __future__ import annotations

import signal
import subprocess
import time

#: what a graceful stop may take at most (the guarantee of docs/reliability.md)
STOP_SECONDS = 10.0


def stop_gracefully(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    sig: int = signal.SIGTERM,
    within: float = STOP_SECONDS,
) -> float:
    """Send ``sig`` and wait: the process must exit with 0 within ``within`` seconds. Returns the
    seconds it took. A process that does not stop is killed, and the test fails."""
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"{proc.args!r} did not stop within {within:.0f} s of {signal.Signals(sig).name}"
        ) from None
    took = time.monotonic() - started
    assert code == 0, f"{proc.args!r} exited with {code} after {signal.Signals(sig).name}"
    return took
