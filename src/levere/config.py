"""One typed settings object, read from ``LEVERE_*`` environment variables and an optional TOML file.

Nothing here runs at import time: call :func:`get_settings` (or build :class:`Settings` yourself in
tests) and pass the object down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from levere.domain.errors import ConfigurationError
from levere.storage.config import BackendSpec, LocalSpec

PLACEHOLDER_SECRET = "change-me-development-only"

TierName = Literal["area", "longterm", "secure"]


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8025
    sender: str = "levere@localhost"
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    #: seconds to wait for the mail server before an e-mail is left pending for the next try
    timeout_seconds: float = 30
    #: when false, e-mails are only recorded in the database (and shown in-app)
    enabled: bool = False
    #: mail recorded while mail was off or the server unreachable is sent once mail works, if it is
    #: younger than this; older mail is marked expired and never sent (its links have likely lapsed)
    max_age_hours: float = Field(default=72, gt=0)


class TierSettings(BaseModel):
    """Which backend each tier uses. Missing tiers default to folders under the data directory."""

    area: BackendSpec | None = None
    longterm: BackendSpec | None = None
    secure: BackendSpec | None = None


class SyncSettings(BaseModel):
    """Copying between tiers (sync to long-term, restore, repair); see docs/jobs.md."""

    #: files copied at once by one job (the small-file rate grows with it; a big file uses 3 more)
    threads: int = Field(default=8, ge=1, le=64)
    #: job tasks queued per sync request; more than 1 spreads one big delivery over several workers
    lanes: int = Field(default=1, ge=1, le=64)
    #: files claimed (leased) at once by one task, and recorded in one transaction
    batch_files: int = Field(default=2048, ge=1, le=10_000)
    #: processes that copy many small files between local tiers (0: one per CPU; 1: none, threads only)
    processes: int = Field(default=0, ge=0, le=64)
    #: how long a claimed file stays reserved to one worker without a heartbeat; a killed worker's
    #: files are taken over after this
    lease_seconds: float = Field(default=300, gt=0)
    #: retries after transient storage errors, the first after ``retry_delay_seconds``, each next
    #: one twice as long (8 retries from 10 s: about 40 minutes in all)
    retries: int = Field(default=8, ge=0)
    retry_delay_seconds: float = Field(default=10, ge=0)
    #: bytes per second per job, 0 for no limit (to leave the working area's disks to its users)
    bandwidth_limit: int = Field(default=0, ge=0)


class AuditSettings(BaseModel):
    """Anchoring the audit chain outside the database; see docs/reliability.md."""

    #: minutes between anchors of the chain's head on long-term storage (written only if it grew)
    anchor_interval_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    #: a second place for anchors besides long-term storage: a backend table like a tier's
    anchor_sink: BackendSpec | None = None


class SecureSettings(BaseModel):
    """The secure zone (sensitive data); see levere.crypt4gh.wrapping for the key file and rotation."""

    #: the master key file: the keys that wrap every secure project's and shared disk's private key
    #: (none: the secure zone cannot hold keys)
    master_key_file: Path | None = None
    #: a shared disk's quota when the helpdesk gives none (1 TiB, as the national service allots)
    disk_quota_bytes: int = Field(default=1 << 40, gt=0)
    #: days before a shared disk's end date when both sides get a notice
    disk_notice_days: list[int] = Field(default_factory=lambda: [7, 1])
    #: days after its end date when the sweep destroys an expired shared disk (its keys dropped)
    disk_destroy_after_days: int = Field(default=30, ge=0)


class OidcProviderSettings(BaseModel):
    """One OpenID Connect provider people may sign in with; see docs/sign-in.md."""

    model_config = {"extra": "forbid"}

    #: short name used in URLs and ``levere login --provider NAME``
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    #: what the sign-in button says, e.g. "Life Science Login"
    title: str = ""
    #: the issuer; its ``/.well-known/openid-configuration`` is read for everything else
    issuer: str
    client_id: str
    #: absent for a public client (PKCE only)
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    #: which claim holds each account field levere reads: ``email``, ``name``, and
    #: ``crypt4gh_public_keys`` (default ``crypt4ghPublicKeys``, as Life Science Login names it)
    claims: dict[str, str] = Field(default_factory=lambda: {"email": "email", "name": "name"})
    #: sent as ``acr_values`` when a second factor is wanted (e.g. https://refeds.org/profile/mfa)
    mfa_acr_values: str = ""
    #: ``acr`` values in an ID token that mean the provider checked a second factor
    mfa_acr: list[str] = Field(default_factory=list)
    #: use the device grant for ``levere login`` when the provider offers it
    device_grant: bool = True
    #: seconds to wait for the provider's answer
    timeout_seconds: float = Field(default=10, gt=0)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("an issuer must be an https:// address (http only on loopback, for tests)")
        return value.rstrip("/")


class OidcSettings(BaseModel):
    """Federated sign-in (``[[oidc.providers]]`` tables); see docs/sign-in.md."""

    providers: list[OidcProviderSettings] = Field(default_factory=list)
    #: minutes a started sign-in may take before its state, nonce or device code is refused
    flow_lifetime_minutes: int = Field(default=15, ge=1, le=120)

    @field_validator("providers")
    @classmethod
    def _unique(cls, value: list[OidcProviderSettings]) -> list[OidcProviderSettings]:
        names = [p.name for p in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"provider names must be unique: {', '.join(twice)} given twice")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEVERE_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    #: development mode allows the placeholder secret key. Invitation links are never logged in any
    #: mode: while mail is off they are handed to whoever made the invitation (API answer, CLI output)
    mode: Literal["development", "production"] = "development"
    data_dir: Path = Path("var")
    database_url: str | None = None
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    #: the address people use to reach this service, used in links inside e-mails
    public_url: str = "http://127.0.0.1:8080"
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    tiers: TierSettings = Field(default_factory=TierSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    secure: SecureSettings = Field(default_factory=SecureSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)

    token_lifetime_days: int = 30
    #: how long a web portal sign-in lasts before the browser must sign in again
    portal_session_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    invitation_lifetime_hours: int = 72
    #: failed sign-ins for one account within the window before even the right password is refused
    login_max_failures: int = 5
    #: failed sign-ins from one client address (any accounts) within the window; higher than the
    #: per-account limit because many people may share an address behind a NAT
    login_max_client_failures: int = 20
    login_window_seconds: int = 300
    #: reverse proxies (addresses or CIDR networks) whose X-Forwarded-For and X-Forwarded-Proto
    #: headers are believed; from any other peer they are ignored and the peer's own address counts
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: largest JSON request body of a signed-in caller; larger ones are refused with 413 unread
    json_body_limit_bytes: int = Field(default=1024**2, ge=1024)
    #: largest JSON request body of routes open without sign-in (sign-in, invitations)
    json_body_limit_anonymous_bytes: int = Field(default=16 * 1024, ge=1024)
    upload_expiry_hours: int = 24
    #: the longest a transfer grant lets a token finish one transfer after the token expired
    transfer_grant_hours: int = Field(default=168, ge=1, le=31 * 24)
    #: processes that hash and publish the small files of batches on a local area tier
    #: (0: one per CPU; 1: none, the request's own thread does it)
    ingest_processes: int = Field(default=0, ge=0, le=64)
    #: run the job worker inside the API process (embedded default)
    embedded_worker: bool = True
    #: where the huey queue lives: "sqlite" (file under data_dir), "redis://..." or "memory"
    queue_url: str = "sqlite"
    #: path of a TOML settings file; read before the environment (environment wins)
    config_file: Path | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        """A JSON or TOML list, or (in the environment) addresses separated by commas."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
        if isinstance(value, list):
            for entry in value:
                try:
                    ipaddress.ip_network(str(entry).strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
            return [str(entry).strip() for entry in value]
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.mode != "development" and self.secret_key.get_secret_value() == PLACEHOLDER_SECRET:
            raise ValueError("LEVERE_SECRET_KEY must be set to a real secret outside development mode")
        if self.mode != "development" and len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("LEVERE_SECRET_KEY must be at least 16 characters long")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'levere.db').resolve()}"

    def tier_spec(self, tier: str) -> BackendSpec:
        """The backend configured for ``tier`` (one of :data:`TierName`)."""
        spec: BackendSpec | None = getattr(self.tiers, tier)
        if spec is not None:
            return spec
        return LocalSpec(type="local", root=(self.data_dir / "storage" / tier).resolve(), backend_id=tier)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls), _TomlSource(settings_cls))


class _EnvSource(EnvSettingsSource):
    """The ``LEVERE_*`` environment, where a table (``LEVERE_TIERS__AREA``) may be written as JSON
    or as the TOML inline table a settings file would hold: the docs show the same value both ways."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError:
            if not isinstance(value, str):
                raise
        try:
            return tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError:
            raise ConfigurationError(
                f"invalid setting {field_name}: {value[:60]!r} is neither JSON nor a TOML inline table "
                '(e.g. {type = "local", root = "/srv/levere/area", backend_id = "area"})'
            ) from None


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the file named by ``LEVERE_CONFIG_FILE`` (lower priority than the environment).

    Every key must be a setting: an unknown one (a typo, or an environment variable's name such as
    ``LEVERE_DATA_DIR``) is refused with its name instead of being silently ignored."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("LEVERE_CONFIG_FILE")
        if not path:
            return {}
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigurationError(f"settings file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"settings file {path} is not valid TOML: {exc}") from None
        check_file_keys(data, path)
        return data


def _tables() -> dict[str, type[BaseModel]]:
    """The settings a file may hold in each table (the tiers' backends check their own keys)."""
    return {
        "": Settings,
        "smtp": SmtpSettings,
        "sync": SyncSettings,
        "tiers": TierSettings,
        "audit": AuditSettings,
        "secure": SecureSettings,
        "oidc": OidcSettings,
    }


def check_file_keys(data: dict[str, Any], path: str) -> None:
    """Refuse any key of a settings file that is not a setting, naming it (and its table)."""
    for table, model in _tables().items():
        values = data if not table else data.get(table)
        if not isinstance(values, dict):
            continue
        for key in values:
            if key in model.model_fields and key != "config_file":
                continue
            if not table and key in _tables():
                continue
            where = f"[{table}] " if table else ""
            raise ConfigurationError(
                f"settings file {path}: {where}{key} is not a setting{_hint(key, table)}"
            )


def _hint(key: str, table: str) -> str:
    if key == "config_file":
        return " (a settings file cannot name another; set LEVERE_CONFIG_FILE)"
    if key.upper().startswith("LEVERE_"):
        parts = key[len("LEVERE_") :].lower().split("__")
        if len(parts) == 1:
            return f" but an environment variable's name: in the file, write {parts[0]}"
        return f" but an environment variable's name: in the file, write {parts[-1]} in a [{'.'.join(parts[:-1])}] table"
    known = sorted(name for name in _tables()[table].model_fields if name != "config_file")
    return f" (the settings here are: {', '.join(known)}; see docs/configuration.md)"


def get_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise ConfigurationError(_first_error(exc)) from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = str(first.get("msg", exc)).removeprefix("Value error, ")
        return f"invalid setting {where}: {msg}" if where else f"invalid settings: {msg}"
    return str(exc)
