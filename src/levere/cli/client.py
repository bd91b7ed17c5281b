"""The CLI's HTTP client: where the service is, the saved token, and errors in one line.

Design notes
------------
The CLI talks to the API only, never to the database (``levere init``, ``serve`` and ``worker`` run
on the server and are the exceptions). The saved credentials file is written with mode 0600 and the
token never appears in output or in ``repr``.

httpx is imported when a :class:`Client` is made, not with this module: it is the largest import
of the CLI, and ``--help``, mistyped options and the checks made before the first request should
not wait for it. The methods that catch its exceptions import it again, which is then a lookup.
"""

from __future__ import annotations

import json
import os
import ssl
import tomllib
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from levere.domain.errors import (
    AccessDenied,
    AuthenticationFailed,
    ChecksumMismatch,
    ConfigurationError,
    Conflict,
    LevereError,
    NotFound,
    QuotaExceeded,
    StorageUnavailable,
    TooManyAttempts,
    ValidationFailed,
    by_code,
)

if TYPE_CHECKING:
    import httpx

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
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigurationError(
                    f"cannot read the saved sign-in {path}: {exc}; remove it and run 'levere login'"
                ) from None
            creds = cls(
                url=data.get("url", DEFAULT_URL), token=data.get("token", ""), email=data.get("email", "")
            )
        creds.url = os.environ.get("LEVERE_URL", creds.url)
        creds.token = os.environ.get("LEVERE_TOKEN", creds.token)
        return creds

    def _fields(self) -> dict[str, str]:
        return {"url": self.url, "email": self.email, "token": self.token}

    def save(self) -> Path:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file may have been readable by others: close that before writing
        with os.fdopen(fd, "w") as fh:
            # JSON strings are valid TOML basic strings: quotes and backslashes come out escaped
            fh.write("".join(f"{key} = {json.dumps(value)}\n" for key, value in self._fields().items()))
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
    code = body.get("error") if isinstance(body, dict) else None
    details = (body.get("details") or {}) if isinstance(body, dict) else {}
    named = by_code(code) if isinstance(code, str) else None
    kind = named or BY_STATUS.get(response.status_code, LevereError)
    try:
        error = kind(message, **details)
    except TypeError:  # a kind with a constructor of its own
        error = BY_STATUS.get(response.status_code, LevereError)(message, **details)
    if isinstance(code, str) and code:
        error.code = code  # the service's own code, also for kinds this client does not know
    return error


def _api_path(path: str) -> str:
    return path if path.startswith("/api/") else "/api" + path


def _raise_for(response: httpx.Response, expect: Collection[int]) -> None:
    # 500 too: a service stopped or restarted mid-request answers it for the requests it drops
    if response.status_code in (500, 502, 503, 504) and response.status_code not in expect:
        raise StorageUnavailable(error_from_response(response).message)
    if response.status_code >= 400 and response.status_code not in expect:
        raise error_from_response(response)


class Client:
    """A thin wrapper over httpx that turns every failure into a :class:`LevereError`."""

    def __init__(self, creds: Credentials, timeout: float = 60.0) -> None:
        import httpx  # see the module notes

        self.creds = creds
        headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
        # A service on plain http:// needs no TLS. httpx would still load the system's CA
        # certificates, a noticeable part of a short command's time; a context without them trusts nothing, so it
        # fails closed if TLS were ever tried.
        verify: ssl.SSLContext | bool = (
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if creds.url.lower().startswith("http://") else True
        )
        self.http = httpx.Client(
            base_url=creds.url.rstrip("/"), headers=headers, timeout=timeout, verify=verify
        )

    def __repr__(self) -> str:
        return f"Client(url={self.creds.url!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, "/api" + path, **kwargs)
        except httpx.ConnectError:
            raise StorageUnavailable(
                f"cannot reach levere at {self.creds.url}: is 'levere serve' running there?"
            ) from None
        except httpx.TimeoutException:
            raise StorageUnavailable(f"levere at {self.creds.url} did not answer in time") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise StorageUnavailable(f"cannot talk to levere at {self.creds.url}: {exc}") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise LevereError(
                f"{self.creds.url} answered with something other than levere's JSON: is it a levere service?"
            ) from None

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

    # --- for transfers: the whole response (status, headers, streamed body) ----------------------

    def _transport_error(self, exc: Exception) -> StorageUnavailable:
        import httpx

        if isinstance(exc, httpx.ConnectError):
            return StorageUnavailable(
                f"cannot reach levere at {self.creds.url}: is 'levere serve' running there?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return StorageUnavailable(f"levere at {self.creds.url} did not answer in time")
        return StorageUnavailable(
            f"the connection to levere at {self.creds.url} broke ({exc or type(exc).__name__})"
        )

    def send(self, method: str, path: str, expect: Collection[int] = (), **kwargs: Any) -> httpx.Response:
        """Like :meth:`request` but returns the response itself. ``path`` may start with ``/api``.

        A status of 400 or more raises, unless listed in ``expect``. Every failure to talk to the
        service, and 500/502/503/504, raises :class:`StorageUnavailable`: the transient kind a transfer
        retries.
        """
        import httpx

        try:
            response = self.http.request(method, _api_path(path), **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc) from None
        _raise_for(response, expect)
        return response

    @contextmanager
    def stream(
        self, method: str, path: str, expect: Collection[int] = (), **kwargs: Any
    ) -> Iterator[httpx.Response]:
        """:meth:`send` whose body is read by the caller, piece by piece, inside the ``with``."""
        import httpx

        try:
            with self.http.stream(method, _api_path(path), **kwargs) as response:
                if response.status_code >= 400 and response.status_code not in expect:
                    response.read()
                _raise_for(response, expect)
                yield response
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc) from None

    # --- transfer grants: a transfer outlives the token it started with ---------------------------

    def begin_grant(self, kind: str, project: str, target: str) -> str | None:
        """Ask for a grant that lets this token finish one transfer after it expires; its id, or
        ``None`` when the service gives none (the transfer then lasts as long as the token)."""
        base = f"/projects/{quote(project, safe='')}"
        try:
            match kind:
                case "delivery":
                    grant = self.post(f"{base}/deliveries/{quote(target, safe='')}/transfer-grant")
                case "download":
                    grant = self.post(f"{base}/download-grants", {"target": target})
                case _:
                    grant = self.post(f"{base}/jobs/{quote(target, safe='')}/transfer-grant")
        except LevereError:
            return None
        grant_id = grant.get("id") if isinstance(grant, dict) else None
        return grant_id if isinstance(grant_id, str) else None

    def end_grant(self, grant_id: str) -> None:
        """The transfer is over; a grant the service already ended is no error."""
        with suppress(LevereError):
            self.send("DELETE", f"/transfer-grants/{quote(grant_id, safe='')}", expect=(401, 404))

    @contextmanager
    def granted(self, kind: str, project: str, target: str) -> Iterator[str | None]:
        """Every request of this client inside the ``with`` belongs to one transfer, and carries its
        grant (``Levere-Grant``); the grant ends with the ``with``."""
        from levere.transfer.wire import GRANT_HEADER

        grant_id = self.begin_grant(kind, project, target)
        if grant_id is None:
            yield None
            return
        self.http.headers[GRANT_HEADER] = grant_id
        try:
            yield grant_id
        finally:
            del self.http.headers[GRANT_HEADER]
            self.end_grant(grant_id)

    def close(self) -> None:
        self.http.close()
