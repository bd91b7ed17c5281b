"""Who holds a lease (on an upload, or on replicas being copied or repaired): the one owner format.

An owner is ``host:pid:token``: the host and process of the holder, readable in the database, and
a random token of the one request, copy lane or repair that took the lease, so that two holders in
one process never take each other's rows. Every lease also carries an expiry that its holder
renews while it works.

A lease is free once it expired. An upload's lease is also free at once when its holder's process
is gone from this host (a crash or SIGKILL), so that a client's retry after a restart does not wait
out the expiry. A process that stops with copies in flight gives its copy leases up itself
(:func:`released_owner`), so that the next worker takes them over at once.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

#: the token of leases a stopping process gave up
RELEASED = "released"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int | None  # None: not a process id (an owner written by something else)
    token: str


def _host() -> str:
    return socket.gethostname()[:60]


def process_prefix() -> str:
    """``host:pid:``, how every owner of this process begins (to find its leases by prefix)."""
    return f"{_host()}:{os.getpid()}:"


def new_owner() -> str:
    """A fresh owner for one holder in this process."""
    return f"{process_prefix()}{secrets.token_hex(6)}"


def released_owner() -> str:
    """The owner written on leases this process gives up: no holder of this process has it."""
    return f"{process_prefix()}{RELEASED}"


def parse_owner(owner: str) -> Owner:
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    return Owner(host, int(pid_text) if pid_text.isdigit() else None, token)


def owner_alive(owner: str) -> bool:
    """False only when the owner's process is known gone: it names this host and a process id
    that no longer exists here. On another machine only the expiry tells."""
    parsed = parse_owner(owner)
    if parsed.host != _host() or parsed.pid is None:
        return True
    try:
        os.kill(parsed.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user holds that PID: it is not ours, but alive
    return True


def held(owner: str | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a live holder holds the lease: unexpired, and its process not gone from this host."""
    return bool(owner) and expires_at is not None and expires_at > now and owner_alive(owner or "")
