"""Who is writing to an upload right now: a lease of a request, named after its host and process.

A lease names ``host:pid:random`` and carries an expiry that its holder renews while it works. It
is free once it expired, or at once when its holder's process is gone from this host (a crash or
SIGKILL), so that nothing waits out the expiry after a restart.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime


def _host() -> str:
    return socket.gethostname()[:60]


def new_owner() -> str:
    return f"{_host()}:{os.getpid()}:{secrets.token_hex(6)}"


def owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _host() or not pid_text.isdigit():
        return True  # another machine: only the expiry tells
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user holds that PID: it is not ours, but alive
    return True


def held(owner: str | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a live request holds the lease."""
    return bool(owner) and expires_at is not None and expires_at > now and owner_alive(owner or "")
