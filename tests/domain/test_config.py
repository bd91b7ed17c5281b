"""Settings: environment and TOML file, the placeholder secret, and no work at import time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from levere.config import PLACEHOLDER_SECRET, Settings, SmtpSettings, get_settings
from levere.domain.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("LEVERE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_environment_variables_are_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("LEVERE_DATA_DIR", str(tmp_path / "data"))
    clean_env.setenv("LEVERE_DATABASE_URL", "postgresql+psycopg://levere@db/levere")
    clean_env.setenv("LEVERE_PUBLIC_URL", "https://levere.example.org")
    clean_env.setenv("LEVERE_SMTP__HOST", "mail.example.org")
    clean_env.setenv("LEVERE_SMTP__PORT", "2525")
    clean_env.setenv("LEVERE_SMTP__ENABLED", "true")
    clean_env.setenv("LEVERE_LOGIN_MAX_FAILURES", "7")
    clean_env.setenv(
        "LEVERE_TIERS__LONGTERM", '{"type": "local", "root": "/srv/longterm", "backend_id": "lt"}'
    )
    settings = get_settings()
    assert settings.data_dir == tmp_path / "data"
    assert settings.resolved_database_url == "postgresql+psycopg://levere@db/levere"
    assert settings.public_url == "https://levere.example.org"
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.enabled) == ("mail.example.org", 2525, True)
    assert settings.login_max_failures == 7
    assert str(settings.tier_spec("longterm").root) == "/srv/longterm"  # type: ignore[union-attr]
    # unset tiers default to folders in the data directory
    assert settings.tier_spec("area").root == (tmp_path / "data" / "storage" / "area").resolve()  # type: ignore[union-attr]


def test_defaults_are_the_embedded_service(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    settings = get_settings()
    assert settings.mode == "development" and settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'var' / 'levere.db')}"
    assert settings.smtp.enabled is False
    assert not (tmp_path / "var").exists()  # reading settings makes nothing


def test_a_toml_file_is_read_and_the_environment_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "levere.toml"
    config.write_text(
        textwrap.dedent(
            """
            public_url = "https://from-file.example.org"
            token_lifetime_days = 10
            invitation_lifetime_hours = 24

            [smtp]
            host = "file-mail.example.org"
            port = 25
            sender = "levere@example.org"
            """
        )
    )
    clean_env.setenv("LEVERE_CONFIG_FILE", str(config))
    clean_env.setenv("LEVERE_TOKEN_LIFETIME_DAYS", "3")
    clean_env.setenv("LEVERE_SMTP__PORT", "587")
    settings = get_settings()
    assert settings.public_url == "https://from-file.example.org"
    assert settings.invitation_lifetime_hours == 24
    assert settings.token_lifetime_days == 3  # the environment wins
    # nested settings merge: the file's host and sender, the environment's port
    assert settings.smtp.host == "file-mail.example.org" and settings.smtp.sender == "levere@example.org"
    assert settings.smtp.port == 587
    # explicit arguments (tests, tools) win over both
    assert get_settings(token_lifetime_days=9).token_lifetime_days == 9


def test_bad_settings_are_one_clear_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("LEVERE_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match=r"missing\.toml does not exist"):
        get_settings()
    broken = tmp_path / "broken.toml"
    broken.write_text("public_url = \n")
    clean_env.setenv("LEVERE_CONFIG_FILE", str(broken))
    with pytest.raises(ConfigurationError, match="is not valid TOML"):
        get_settings()
    clean_env.delenv("LEVERE_CONFIG_FILE")
    clean_env.setenv("LEVERE_SMTP__PORT", "not-a-port")
    with pytest.raises(ConfigurationError, match=r"invalid setting smtp\.port"):
        get_settings()


def test_the_placeholder_secret_is_refused_in_production(clean_env: pytest.MonkeyPatch) -> None:
    # development accepts the placeholder
    assert Settings(mode="development").secret_key.get_secret_value() == PLACEHOLDER_SECRET
    clean_env.setenv("LEVERE_MODE", "production")
    with pytest.raises(ConfigurationError, match="LEVERE_SECRET_KEY must be set"):
        get_settings()
    clean_env.setenv("LEVERE_SECRET_KEY", "short")
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        get_settings()
    clean_env.setenv("LEVERE_SECRET_KEY", "a real secret of enough length")
    assert get_settings().mode == "production"


def _levere(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    return subprocess.run(
        [sys.executable, "-m", "levere.cli.main", *args],
        env=clean | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["init", "--email", "op@levere.test"]])
def test_serve_and_init_refuse_the_placeholder_in_one_line(command: list[str], tmp_path: Path) -> None:
    done = _levere(
        command,
        {"LEVERE_MODE": "production", "LEVERE_DATA_DIR": str(tmp_path / "data"), "LEVERE_PASSWORD": "p" * 12},
        tmp_path,
    )
    assert done.returncode == 2, done.stderr  # ConfigurationError's exit code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LEVERE_SECRET_KEY must be set" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_importing_levere_does_no_work(tmp_path: Path) -> None:
    """Every module imports without making files, engines, threads or settings."""
    script = textwrap.dedent(
        """
        import gc, importlib, os, pkgutil, threading
        import levere
        before = set(os.listdir("."))
        threads = threading.active_count()
        for info in pkgutil.walk_packages(levere.__path__, "levere."):
            if ".migrations" in info.name:
                continue  # alembic's env.py runs migrations when alembic loads it, by design
            importlib.import_module(info.name)
        import sqlalchemy
        from levere.config import Settings
        engines = [o for o in gc.get_objects() if isinstance(o, sqlalchemy.engine.Engine)]
        settings = [o for o in gc.get_objects() if isinstance(o, Settings)]
        print(len(engines), len(settings), threading.active_count() - threads, sorted(set(os.listdir(".")) - before))
        """
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 0 0 []", done.stdout
    assert list(tmp_path.iterdir()) == []


def test_every_setting_is_documented() -> None:
    """Each setting is named in the README's configuration table or in a document under docs/."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    text = "\n".join(path.read_text() for path in docs if path.exists())
    missing = [
        f"LEVERE_{name.upper()}" for name in Settings.model_fields if f"LEVERE_{name.upper()}" not in text
    ]
    missing += [
        f"LEVERE_SMTP__{name.upper()}"
        for name in SmtpSettings.model_fields
        if f"__{name.upper()}" not in text
    ]
    assert not missing, f"settings not documented in README.md or docs/: {missing}"
