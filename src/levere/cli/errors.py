"""How the CLI reports a failure: one line on stderr and an exit code, or one JSON object with ``--json``.

Design notes
------------
Services raise domain errors with a ``code`` and ``details`` and say what happened; which command
helps next is the CLI's own word, chosen here by ``code`` (:data:`HINTS`), so that the API and the
portal can give hints of their own. Under ``--json`` the error is one JSON object on stderr, so that
stdout holds only results::

    {"error": "not_found", "message": "no application 999", "details": {}, "exit_code": 4}

with a ``"hint"`` when the CLI has one. Usage errors (a mistyped option, a missing argument) have the
code ``usage`` and exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from levere.cli.output import err_console
from levere.domain.errors import LevereError

#: the exit code of a command used wrongly (as click's own)
USAGE_EXIT = 2


def _not_synced(details: dict[str, Any]) -> str:
    project = details.get("project") or "PROJECT"
    return (
        "only the helpdesk can sync a project to long-term storage: ask them to, "
        f"with 'levere sync {project}', then try again"
    )


def _sign_in_again(details: dict[str, Any]) -> str:
    if str(details.get("reason", "")).startswith("token_"):  # the saved token no longer works
        return "sign in again with 'levere login --email YOUR-EMAIL'"
    return ""


def _resend(details: dict[str, Any]) -> str:
    """Someone invited already gets a fresh link by a resend, not a second account."""
    return f"send a fresh link with 'levere invitations resend {details.get('email') or 'EMAIL'}'"


def _make_room(_details: dict[str, Any]) -> str:
    return "once the helpdesk has made room, run the same command again: it goes on from what was stored"


#: the CLI's hint for an error, by the error's code
HINTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "not_synced": _not_synced,
    "already_invited": _resend,
    "authentication_failed": _sign_in_again,
    "storage_full": _make_room,
}


def hint_for(code: str, details: dict[str, Any]) -> str:
    make = HINTS.get(code)
    return make(details) if make is not None else ""


def json_requested(args: Sequence[str]) -> bool:
    """Whether ``--json`` is among the options (before any ``--``), for errors raised before the
    option itself is read, such as a mistyped option."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def report(
    code: str,
    message: str,
    exit_code: int,
    as_json: bool,
    details: dict[str, Any] | None = None,
    label: str = "error",
) -> int:
    """Print one failure and return its exit code."""
    hint = hint_for(code, details or {})
    if as_json:
        data: dict[str, Any] = {"error": code, "message": message, "details": details or {}}
        if hint:
            data["hint"] = hint
        data["exit_code"] = exit_code
        sys.stderr.write(json.dumps(data, default=str) + "\n")
        sys.stderr.flush()
        return exit_code
    from rich.markup import escape  # messages hold names and paths that may contain [brackets]

    line = f"{message}; {hint}" if hint else message
    err_console.print(f"[red]{label}:[/red] {escape(line)}", highlight=False)
    return exit_code


def report_levere(exc: LevereError, as_json: bool) -> int:
    return report(exc.code, exc.message, exc.exit_code, as_json, exc.details)
