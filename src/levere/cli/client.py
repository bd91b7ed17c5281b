"""The CLI's HTTP client: where the service is, the saved token, and errors in one line.

Design notes
------------
The CLI talks to the API only, never to the database (``levere init``, ``serve`` and ``worker`` run
on the server and are the exceptions). The saved credentials file is written with mode 0600 and the
token never appears in output or in ``repr``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from levere.domain.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    ChecksumMismatch,
    Conflict,
    LevereError,
    NotFound,
    QuotaExceeded,
    StorageUnavailable,
    TooManyAttempts,
    ValidationFailed,
)

DEFAULT_URL = "http://127.0.0.1:8080"
BY_STATUS: dict[int, type[LevereError]] = {
    401: AuthenticationFailed,
    403: AccessDenied,
    404: NotFound,
    409: Conflict,
    429: TooManyAttempts,
    460: ChecksumMismatch,
    503: StorageUnavailable,
    507: QuotaExceeded,
}


def config_path() -> Path:
    if env := os.environ.get("LEVERE_CLI_CONFIG"):
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "levere" / "cli.toml"


@dataclass
class Credentials:
    url: str = DEFAULT_URL
    token: str = field(default="", repr=False)
    email: str = ""

    @classmethod
    def load(cls) -> Credentials:
        creds = cls()
        path = config_path()
        if path.exists():
            data = tomllib.loads(path.read_text())
            creds = cls(
                url=data.get("url", DEFAULT_URL), token=data.get("token", ""), email=data.get("email", "")
            )
        creds.url = os.environ.get("LEVERE_URL", creds.url)
        creds.token = os.environ.get("LEVERE_TOKEN", creds.token)
        return creds

    def save(self) -> Path:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'url = "{self.url}"\nemail = "{self.email}"\ntoken = "{self.token}"\n')
        os.chmod(path, 0o600)
        return path


def error_from_response(response: httpx.Response) -> LevereError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    message = message or f"the service answered {response.status_code} {response.reason_phrase}"
    if response.status_code == 422:
        fields = (body.get("details") or {}).get("fields") if isinstance(body, dict) else None
        if fields:
            return ValidationFailed(fields)
    if response.status_code == 409 and isinstance(body, dict) and body.get("error") == "already_exists":
        return AlreadyExists(message)
    kind = BY_STATUS.get(response.status_code, LevereError)
    return kind(message, **(body.get("details") or {} if isinstance(body, dict) else {}))


class Client:
    """A thin wrapper over httpx that turns every failure into a :class:`LevereError`."""

    def __init__(self, creds: Credentials, timeout: float = 60.0) -> None:
        self.creds = creds
        headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
        self.http = httpx.Client(base_url=creds.url.rstrip("/"), headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"Client(url={self.creds.url!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, "/api" + path, **kwargs)
        except httpx.ConnectError:
            raise StorageUnavailable(
                f"cannot reach levere at {self.creds.url}: is 'levere serve' running there?"
            ) from None
        except httpx.TimeoutException:
            raise StorageUnavailable(f"levere at {self.creds.url} did not answer in time") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json if json is not None else {}, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.http.close()
