"""``make demo`` shows every command it runs, as typed, and names objects as people know them."""

from __future__ import annotations

import io
import re
import sqlite3
import subprocess
import sys
from typing import Any

import pytest
from rich.console import Console

from levere.crypt4gh import MasterKeys
from levere.services.secure import key_context
from tests.conftest import PG_URL
from tests.markdown_blocks import ROOT
from tests.plaintext_scan import scan_paths


@pytest.mark.skipif(bool(PG_URL), reason="the demo runs on its own SQLite database: once is enough")
def test_the_demo_shows_every_command_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import demo  # scripts/demo.py

    ran: list[list[str]] = []
    real_run = subprocess.run

    def recording(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if isinstance(args, list) and args and args[0] == demo.LEVERE:
            ran.append([str(a) for a in args[1:]])
        return real_run(args, *rest, **kwargs)

    screen = Console(record=True, width=120, highlight=False, file=io.StringIO())
    monkeypatch.setattr(subprocess, "run", recording)
    monkeypatch.setattr(demo, "console", screen)
    sys.modules.pop("demo_run", None)
    demo.main()
    shown = screen.export_text()
    prompts = [line for line in shown.splitlines() if re.match(r"^\w+\$ ", line)]
    missing = [args for args in ran if not any(demo._command(args) in line for line in prompts)]
    assert ran and not missing, f"run but not shown: {missing[:5]}"
    for hidden_before in (
        "levere account totp-enrol",
        "levere apply --file",
        "levere applications approve 1 --area-quota",
    ):
        assert any(hidden_before in line for line in prompts), hidden_before
    approved = shown.index("application 1 approved")
    assert "levere applications approve 1" in shown[:approved].rsplit("$ ", 1)[1]  # the command right before
    audit = shown[shown.index("levere audit list") : shown.index("levere audit verify")]
    assert "LEV-20" in audit and not re.search(r"\b[0-9a-f]{8}-[0-9a-f]{4}", audit), audit

    # the sensitive path left no plaintext and no private key in clear anywhere levere wrote: its
    # storage on every tier, its databases (with their write-ahead logs) and the server's log
    demo_dir = ROOT / ".demo"
    written = [demo_dir / "data", demo_dir / "server.log"]
    sensitive = sorted((demo_dir / "sequencer-secure").rglob("*.fastq.gz"))
    assert len(sensitive) == 2, sensitive  # one uploaded in plaintext, one kept when it was encrypted
    for path in sensitive:
        assert not scan_paths(written, path.read_bytes()), f"plaintext of {path.name} found"
    keys = MasterKeys.from_file(demo_dir / "master.keys")
    with sqlite3.connect(demo_dir / "data" / "levere.db") as db:
        rows = db.execute("select id, wrapped_private_key from secure_projects").fetchall()
    assert len(rows) == 2
    for row_id, wrapped in rows:
        secret = keys.unwrap(wrapped, key_context("secure-project", row_id)).secret_bytes()
        assert not scan_paths(written, secret), "a secure project's private key is stored in clear"
