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
    reason = str(details.get("reason", ""))
    if reason == "one_time_code_missing":
        return "give the code with --totp CODE"
    if reason.startswith("token_"):  # the saved token no longer works
        return "sign in again with 'levere login --email YOUR-EMAIL'"
    return ""


def _denied(details: dict[str, Any]) -> str:
    if details.get("reason") == "scope_missing":
        return "sign in again with 'levere login' for a token that has them"
    return ""


def _not_found(details: dict[str, Any]) -> str:
    if details.get("reason") == "totp_not_started":
        return "start it with 'levere account totp-enrol'"
    return ""


def _conflict(details: dict[str, Any]) -> str:
    if details.get("reason") == "has_password":
        return f"sign in with 'levere login --email {details.get('email') or 'YOUR-EMAIL'}'"
    return ""


def _resend(details: dict[str, Any]) -> str:
    """Someone invited already gets a fresh link by a resend, not a second account."""
    return f"send a fresh link with 'levere invitations resend {details.get('email') or 'EMAIL'}'"


def _make_room(_details: dict[str, Any]) -> str:
    return "once the helpdesk has made room, run the same command again: it goes on from what was stored"


def _encrypt_to_the_disk(details: dict[str, Any]) -> str:
    disk = details.get("shared_disk") or "SHARED-DISK"
    return (
        f"save the key that 'levere secure pubkey {disk}' prints to a file, encrypt to it with "
        "'crypt4gh encrypt --recipient_pk THAT-FILE < FILE > FILE.c4gh' and upload FILE.c4gh; "
        "or upload the plaintext as it is, and levere encrypts it on the way"
    )


def _encrypt_again(_details: dict[str, Any]) -> str:
    return (
        "the file changed or was cut short after it was encrypted: if you uploaded it, encrypt it again "
        "from the original and upload it again; if levere stored it, tell the helpdesk"
    )


def _public_key(_details: dict[str, Any]) -> str:
    return (
        "give the public key file (the .pub that 'crypt4gh-keygen' makes, starting with "
        "'-----BEGIN CRYPT4GH PUBLIC KEY-----'); to make a key pair, run "
        "'crypt4gh-keygen --sk NAME.sec --pk NAME.pub'"
    )


def _secret_key(_details: dict[str, Any]) -> str:
    return (
        "give the secret key file that 'crypt4gh-keygen' made (the .sec, not the .pub) and its "
        "passphrase; a new pair from 'crypt4gh-keygen --sk NAME.sec --pk NAME.pub' opens only files "
        "encrypted to its own .pub"
    )


#: the CLI's hint for an error, by the error's code
HINTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "not_synced": _not_synced,
    "already_invited": _resend,
    "authentication_failed": _sign_in_again,
    "access_denied": _denied,
    "not_found": _not_found,
    "conflict": _conflict,
    "storage_full": _make_room,
    "not_crypt4gh": _encrypt_to_the_disk,
    "encrypted_to_another_key": _encrypt_to_the_disk,
    "ciphertext_damaged": _encrypt_again,
    "invalid_public_key": _public_key,
    "invalid_secret_key": _secret_key,
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
