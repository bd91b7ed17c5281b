"""The configuration as documented: every example parses, the settings file is strict, and
``levere serve``/``levere worker`` refuse to start on a tier they cannot use."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from levere.api.schemas import ApplicationIn
from levere.cli.applications import parse_member, read_form_file
from levere.config import AuditSettings, Settings, SmtpSettings, SyncSettings, get_settings
from levere.context import Context
from levere.domain.errors import ConfigurationError
from levere.storage import LocalSpec, S3Spec
from tests.conftest import free_port
from tests.markdown_blocks import DOCUMENTS, ROOT, blocks, shell_lines
from tests.storage.conftest import s3_params

CONFIGURATION = ROOT / "docs" / "configuration.md"
#: ``LEVERE_*`` variables of the command-line client and of tests, not settings of the service
CLIENT_VARIABLES = {
    "LEVERE_URL",
    "LEVERE_TOKEN",
    "LEVERE_CLI_CONFIG",
    "LEVERE_PASSWORD",
    "LEVERE_CONFIG_FILE",
    "LEVERE_DEBUG",
}
_ASSIGNMENT = re.compile(r"^(LEVERE_[A-Z0-9_]+)=(.*)$", re.DOTALL)
_INLINE = re.compile(r"`(LEVERE_[A-Z0-9_]+=[^`]+)`")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("LEVERE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _settings_from_file(env: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "levere.toml"
    path.write_text(text)
    env.setenv("LEVERE_CONFIG_FILE", str(path))
    try:
        return get_settings()
    finally:
        env.delenv("LEVERE_CONFIG_FILE")


# --- the documented examples ------------------------------------------------------------------------


def test_the_full_settings_file_sets_every_setting(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    full = blocks(CONFIGURATION, "toml")[0]
    data = tomllib.loads(full.text)
    tables: dict[str, type[BaseModel]] = {"smtp": SmtpSettings, "sync": SyncSettings, "audit": AuditSettings}
    missing = [name for name in Settings.model_fields if name not in data and name != "config_file"]
    for table, model in tables.items():
        missing += [f"[{table}] {name}" for name in model.model_fields if name not in data.get(table, {})]
    missing += [f"[tiers.{tier}]" for tier in ("area", "longterm", "secure") if tier not in data["tiers"]]
    assert not missing, f"the full example in {full.where} leaves out: {missing}"
    settings = _settings_from_file(clean_env, tmp_path, full.text)
    assert settings.mode == "production" and settings.data_dir == Path("/srv/levere")
    assert settings.smtp.starttls is True and settings.smtp.password is not None
    assert settings.sync.batch_files == 2048
    assert isinstance(settings.tier_spec("area"), LocalSpec)
    longterm = settings.tier_spec("longterm")
    assert isinstance(longterm, S3Spec) and longterm.write_once and longterm.retention_mode == "compliance"
    assert settings.audit.anchor_sink is not None
    assert "the-s3-secret-key" not in repr(settings)  # secrets stay out of reprs


def test_every_setting_is_explained_in_the_configuration_page() -> None:
    text = CONFIGURATION.read_text()
    tables = {
        "smtp": "`[smtp]`",
        "sync": "`[sync]`",
        "tiers": "`[tiers.",
        "audit": "`[audit]`",
        "oidc": "`[oidc]`",
    }
    missing = [
        name
        for name in Settings.model_fields
        if name != "config_file" and tables.get(name, f"`{name}`") not in text
    ]
    missing += [f"smtp {name}" for name in SmtpSettings.model_fields if f"`{name}`" not in text]
    assert not missing, f"add these settings to docs/configuration.md: {missing}"


def _toml_examples() -> list[Any]:
    return [pytest.param(b, id=b.where) for doc in DOCUMENTS for b in blocks(doc, "toml")]


@pytest.mark.parametrize("block", _toml_examples())
def test_every_toml_example_parses(block: Any, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A settings file loads as settings; an application form (``[application]``) as the form
    ``levere apply --file`` sends."""
    data = tomllib.loads(block.text)
    if "application" in data:
        path = tmp_path / "application.toml"
        path.write_text(block.text)
        form = read_form_file(path)
        form["members"] = [parse_member(m) for m in form.get("members", [])]
        ApplicationIn.model_validate(form)
        return
    _settings_from_file(clean_env, tmp_path, block.text)


def _environment_examples() -> list[Any]:
    found: list[Any] = []
    for doc in DOCUMENTS:
        for block in blocks(doc, "sh", "bash", "console"):
            for line, command in shell_lines(block):
                for word in shlex.split(command.removeprefix("export ")):
                    match = _ASSIGNMENT.match(word)
                    if match is None:
                        break  # assignments come first; then the command
                    found.append(pytest.param(*match.groups(), id=f"{block.where}+{line - block.line}"))
        text = doc.read_text()
        for match in _INLINE.finditer(text):
            name, _, value = match.group(1).partition("=")
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(name, shlex.split(value)[0], id=f"{doc.relative_to(ROOT)}:{line}"))
    return found


@pytest.mark.parametrize(("name", "value"), _environment_examples())
def test_every_environment_example_parses(name: str, value: str, clean_env: pytest.MonkeyPatch) -> None:
    if name in CLIENT_VARIABLES:
        return
    field = name.removeprefix("LEVERE_").lower().split("__")
    assert field[0] in Settings.model_fields, f"{name} is not a setting"
    clean_env.setenv(name, value)
    settings = get_settings()
    found: Any = settings
    for part in field:
        found = getattr(found, part)
    assert found is not None, f"{name}={value} left the setting unset"
    if field[0] == "tiers":
        assert isinstance(found, LocalSpec | S3Spec)


def test_a_tier_in_the_environment_may_be_toml_or_json(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LEVERE_TIERS__AREA", '{type = "local", root = "/srv/area", backend_id = "area"}')
    clean_env.setenv("LEVERE_TIERS__LONGTERM", '{"type": "local", "root": "/srv/lt", "backend_id": "lt"}')
    settings = get_settings()
    assert settings.tier_spec("area") == LocalSpec(root=Path("/srv/area"), backend_id="area")
    assert settings.tier_spec("longterm") == LocalSpec(root=Path("/srv/lt"), backend_id="lt")
    clean_env.setenv("LEVERE_TIERS__AREA", "{type = local}")
    with pytest.raises(ConfigurationError, match="neither JSON nor a TOML inline table"):
        get_settings()


# --- a strict settings file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('LEVERE_DATA_DIR = "/srv/levere"\n', "LEVERE_DATA_DIR is not a setting .* write data_dir$"),
        ('LEVERE_SMTP__HOST = "mail"\n', r"write host in a \[smtp\] table"),
        ('data_dri = "/srv/levere"\n', "data_dri is not a setting"),
        ('[smtp]\nhots = "mail"\n', r"\[smtp\] hots is not a setting .*host"),
        ("[sync]\nthread = 4\n", r"\[sync\] thread is not a setting"),
        ("[audit]\nanchor_interval = 5\n", r"\[audit\] anchor_interval is not a setting"),
        ('config_file = "/etc/other.toml"\n', "cannot name another"),
        ('[tiers.area]\ntype = "local"\nroot = "/x"\nbackend_id = "a"\nroots = "/y"\n', "roots"),
    ],
)
def test_a_key_that_is_not_a_setting_is_refused_by_name(
    text: str, message: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _settings_from_file(clean_env, tmp_path, text)


# --- tiers checked at start-up --------------------------------------------------------------------


def _levere(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    return subprocess.run(
        [sys.executable, "-m", "levere.cli.main", *args],
        env=clean | env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
@pytest.mark.parametrize("problem", ["missing", "a file"])
def test_serve_and_worker_refuse_a_tier_they_cannot_use(
    command: list[str], problem: str, tmp_path: Path
) -> None:
    root = tmp_path / "longterm"
    if problem == "a file":
        root.write_text("not a folder")
    env = {
        "LEVERE_DATA_DIR": str(tmp_path / "data"),
        "LEVERE_QUEUE_URL": "memory",
        "LEVERE_TIERS__LONGTERM": f'{{type = "local", root = "{root}", backend_id = "longterm"}}',
    }
    done = _levere(command, env, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot start: tier longterm") and str(root) in lines[0]
    assert not root.is_dir()  # a configured root is never made by levere


def test_default_tiers_are_made_and_checked(tmp_path: Path, settings: Settings) -> None:
    ctx = Context.build(settings)
    try:
        ctx.check_tiers()  # the embedded default: folders under the data directory, made here
    finally:
        ctx.close()
    assert all((settings.data_dir / "storage" / tier).is_dir() for tier in ("area", "longterm", "secure"))


def test_an_s3_tier_whose_bucket_is_missing_or_unreachable_is_named(
    tmp_path: Path, settings: Settings
) -> None:
    params = s3_params() or {
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "access_key": "a",
        "secret_key": "b",
    }
    cases = [params | {"bucket": "levere-no-such-bucket"}]
    if s3_params() is not None:  # a real S3 server: also one that does not answer
        cases.append(params | {"endpoint_url": f"http://127.0.0.1:{free_port()}", "bucket": "levere-x"})
    for case in cases:
        spec = S3Spec(backend_id="lt", **case)
        ctx = Context.build(
            settings.model_copy(update={"tiers": settings.tiers.model_copy(update={"longterm": spec})})
        )
        try:
            with pytest.raises(
                ConfigurationError, match=r"^cannot start: tier longterm: (bucket|S3 storage)"
            ):
                ctx.check_tiers()
        finally:
            ctx.close()
