"""The one lease-owner format: made, read back, and a holder's process known gone from this host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

from levere.dataplane import leases
from levere.db.models import utcnow


def finished_pid() -> int:
    """The id of a process that has ended (and been reaped) on this host."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_owner_names_this_host_and_process_and_one_holder() -> None:
    first, second = leases.new_owner(), leases.new_owner()
    assert first != second  # two holders in one process never share rows
    parsed = leases.parse_owner(first)
    assert parsed.host == socket.gethostname()[:60] and parsed.pid == os.getpid() and parsed.token
    assert first.startswith(leases.process_prefix())
    assert leases.released_owner().startswith(leases.process_prefix())
    assert leases.parse_owner(leases.released_owner()).token == leases.RELEASED


def test_a_holder_whose_process_is_gone_from_this_host_holds_nothing() -> None:
    now = utcnow()
    later = now + timedelta(minutes=5)
    alive = leases.new_owner()
    gone = f"{socket.gethostname()[:60]}:{finished_pid()}:abc123"
    assert leases.held(alive, later, now)
    assert not leases.owner_alive(gone) and not leases.held(gone, later, now)
    # another machine's process cannot be looked at: only the expiry tells
    elsewhere = f"not-{socket.gethostname()[:50]}:{finished_pid()}:abc123"
    assert leases.owner_alive(elsewhere) and leases.held(elsewhere, later, now)
    assert not leases.held(elsewhere, now - timedelta(seconds=1), now)
    # an owner that is not ours to read is trusted until it expires
    assert leases.owner_alive("someone") and leases.parse_owner("someone").pid is None
    assert not leases.held(None, later, now) and not leases.held(alive, None, now)
