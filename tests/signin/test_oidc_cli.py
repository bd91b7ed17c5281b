"""``levere login --provider`` as a real subprocess against a live service and a real provider: the
device grant (the person enters the code at the provider) and the loopback browser flow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from levere.auth import oidc
from levere.config import Settings
from levere.domain.roles import UserKind
from levere.services import federation
from tests.conftest import LiveServer
from tests.helpers import make_user
from tests.oidc import Provider, approve_device, browser_sign_in, providers, run_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from run_provider(tmp_path_factory.mktemp("oidc"))


@pytest.fixture
def settings(settings: Settings, provider: Provider) -> Settings:
    oidc.CACHE.clear()
    settings.oidc = providers(provider.issuer)
    return settings


@pytest.fixture
def alice(live_server: LiveServer) -> str:
    make_user(live_server.ctx, "alice@levere.test", password=None)
    root = make_user(live_server.ctx, "root@levere.test", kind=UserKind.HELPDESK, password=None)
    federation.link_identity(live_server.ctx, root, "alice@levere.test", "test", "alice")
    return "alice@levere.test"


def _env(live_server: LiveServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    return env | {
        "LEVERE_URL": live_server.url,
        "LEVERE_CLI_CONFIG": str(home / "cli.toml"),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "400",
    }


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "levere.cli.main", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(stream: IO[str], pattern: str) -> re.Match[str]:
    seen = []
    for line in stream:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"never printed {pattern!r}: {''.join(seen)}")


def test_login_with_the_device_grant(live_server: LiveServer, alice: str, tmp_path: Path) -> None:
    env = _env(live_server, tmp_path)
    process = _start(env, "--json", "login", "--provider", "test")
    assert process.stderr is not None
    found = _wait_for(process.stderr, r"open (\S+) and enter the code (\S+)")
    approve_device(found.group(1), found.group(2), "alice")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    signed_in = json.loads(out)
    assert signed_in["email"] == alice and signed_in["provider"] == "test"
    shown = subprocess.run(
        [sys.executable, "-m", "levere.cli.main", "--json", "account", "show"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(shown.stdout)["email"] == alice
    listed = subprocess.run(
        [sys.executable, "-m", "levere.cli.main", "--json", "account", "identities"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert [(i["provider"], i["subject"]) for i in json.loads(listed.stdout)] == [("test", "alice")]


def test_login_in_a_browser_on_a_loopback_redirect(
    live_server: LiveServer, alice: str, tmp_path: Path
) -> None:
    process = _start(_env(live_server, tmp_path), "login", "--provider", "test", "--browser")
    assert process.stdout is not None
    url = _wait_for(process.stdout, r"^(http://127\.0\.0\.1:\d+/auth\?\S+)").group(1)
    redirect = re.search(r"redirect_uri=([^&]+)", url)
    assert redirect and "127.0.0.1" in redirect.group(1)
    from urllib.parse import unquote

    browser_sign_in(url, unquote(redirect.group(1)), "alice", deliver=True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"signed in as {alice} with test" in out


def test_a_person_who_cancels_at_the_provider_is_told_and_nothing_is_saved(
    live_server: LiveServer, alice: str, tmp_path: Path
) -> None:
    process = _start(_env(live_server, tmp_path), "login", "--provider", "test", "--browser")
    assert process.stdout is not None
    url = _wait_for(process.stdout, r"^(http://127\.0\.0\.1:\d+/auth\?\S+)").group(1)
    from urllib.parse import unquote

    redirect = re.search(r"redirect_uri=([^&]+)", url)
    assert redirect
    browser_sign_in(url, unquote(redirect.group(1)), "alice", deny=True, deliver=True)
    _out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "refused the sign-in" in err and "cancelled" in err
    assert not (tmp_path / "cli.toml").exists()
