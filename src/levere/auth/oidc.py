"""The OpenID Connect protocol as levere speaks it to a provider: discovery, the authorization code
grant with PKCE, the device grant (RFC 8628), and ID token verification.

Design notes
------------
Authlib builds the authorization request (PKCE S256, the grant URI) and joserfc, its sister library,
verifies ID tokens against the provider's published keys; nothing here parses a JWT by hand. The
token requests are plain form POSTs over httpx (Authlib's httpx integration is deprecated upstream).
Discovery documents and key sets are cached per issuer for a few minutes; a token signed by a key
not in the cached set makes one fresh fetch (the provider may have rotated its keys) before it is
refused. Every failure to reach the provider, or an answer that is not the protocol, is a
:class:`ProviderUnavailable`; every token that does not verify is an :class:`AuthenticationFailed`.
Nothing here touches the database.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet

from levere.config import OidcProviderSettings
from levere.domain.errors import AuthenticationFailed, ProviderUnavailable

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: signature algorithms levere accepts in ID tokens ("none" and HMAC never)
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
#: seconds of clock difference tolerated in ``exp``, ``iat`` and ``nbf``
LEEWAY = 60
CACHE_SECONDS = 300


@dataclass(frozen=True)
class Metadata:
    """What levere uses of a provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str | None
    userinfo_endpoint: str | None
    acr_values_supported: tuple[str, ...]


@dataclass
class _Cache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    metadata: dict[str, tuple[float, Metadata]] = field(default_factory=dict)
    keys: dict[str, tuple[float, KeySet]] = field(default_factory=dict)

    def clear(self) -> None:
        with self.lock:
            self.metadata.clear()
            self.keys.clear()


CACHE = _Cache()


def _get_json(provider: OidcProviderSettings, url: str, what: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, timeout=provider.timeout_seconds, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(
            f"sign-in provider {provider.name} cannot be reached ({type(exc).__name__}); try again later",
            provider=provider.name,
        ) from None
    if response.status_code != 200:
        raise ProviderUnavailable(
            f"sign-in provider {provider.name} answered {response.status_code} for its {what}; "
            "try again later",
            provider=provider.name,
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ProviderUnavailable(
            f"sign-in provider {provider.name} answered its {what} with something that is not JSON",
            provider=provider.name,
        )
    return data


def metadata(provider: OidcProviderSettings) -> Metadata:
    """The provider's discovery document, checked to name the issuer levere was configured with."""
    now = time.monotonic()
    with CACHE.lock:
        cached = CACHE.metadata.get(provider.issuer)
    if cached and cached[0] > now:
        return cached[1]
    doc = _get_json(provider, f"{provider.issuer}/.well-known/openid-configuration", "discovery document")
    needed = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
    missing = [key for key in needed if not isinstance(doc.get(key), str)]
    if missing:
        raise ProviderUnavailable(
            f"sign-in provider {provider.name}'s discovery document lacks {', '.join(missing)}",
            provider=provider.name,
        )
    if doc["issuer"].rstrip("/") != provider.issuer:
        # OpenID Connect Discovery 1.0, section 4.3: a document for another issuer must not be used
        raise ProviderUnavailable(
            f"sign-in provider {provider.name}'s discovery document names the issuer {doc['issuer']}, "
            f"not the configured {provider.issuer}",
            provider=provider.name,
        )
    device = doc.get("device_authorization_endpoint")
    userinfo = doc.get("userinfo_endpoint")
    found = Metadata(
        issuer=doc["issuer"],
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        device_authorization_endpoint=device if isinstance(device, str) else None,
        userinfo_endpoint=userinfo if isinstance(userinfo, str) else None,
        acr_values_supported=tuple(str(v) for v in doc.get("acr_values_supported") or ()),
    )
    with CACHE.lock:
        CACHE.metadata[provider.issuer] = (now + CACHE_SECONDS, found)
    return found


def _keys(provider: OidcProviderSettings, meta: Metadata, *, fresh: bool = False) -> KeySet:
    now = time.monotonic()
    with CACHE.lock:
        cached = CACHE.keys.get(provider.issuer)
    if cached and cached[0] > now and not fresh:
        return cached[1]
    doc = _get_json(provider, meta.jwks_uri, "signing keys")
    try:
        keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError):
        raise ProviderUnavailable(
            f"sign-in provider {provider.name}'s signing keys are not a JSON Web Key Set",
            provider=provider.name,
        ) from None
    with CACHE.lock:
        CACHE.keys[provider.issuer] = (now + CACHE_SECONDS, keys)
    return keys


class _Refused(Exception):
    """The provider's token endpoint refused the request (RFC 6749, section 5.2)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(error)
        self.error = error
        self.description = description


def _unreachable(provider: OidcProviderSettings, exc: Exception) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"sign-in provider {provider.name} cannot be reached ({type(exc).__name__}); try again later",
        provider=provider.name,
    )


def _post(provider: OidcProviderSettings, url: str, data: dict[str, str]) -> httpx.Response:
    """A form POST to the provider, authenticated as levere's client: HTTP Basic with the secret
    (``client_secret_basic``), or the client id alone for a public client."""
    secret = provider.client_secret.get_secret_value() if provider.client_secret else None
    if secret is None:
        data = {**data, "client_id": provider.client_id}
    try:
        return httpx.post(
            url,
            data=data,
            auth=httpx.BasicAuth(provider.client_id, secret) if secret is not None else None,
            headers={"Accept": "application/json"},
            timeout=provider.timeout_seconds,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise _unreachable(provider, exc) from None


def _json_answer(provider: OidcProviderSettings, response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ProviderUnavailable(
            f"sign-in provider {provider.name} answered the {what} with something that is not JSON "
            f"({response.status_code})",
            provider=provider.name,
        )
    if response.status_code != 200 or "error" in answer:
        raise _Refused(
            str(answer.get("error") or response.status_code), str(answer.get("error_description") or "")
        )
    return answer


def authorization_url(
    provider: OidcProviderSettings,
    *,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_verifier: str,
    mfa: bool,
) -> str:
    """Where the browser goes to sign in: the code grant with PKCE (S256), ``state`` and ``nonce``."""
    meta = metadata(provider)
    extra: dict[str, str] = {
        "nonce": nonce,
        "code_challenge": create_s256_code_challenge(code_verifier),
        "code_challenge_method": "S256",
    }
    if mfa and provider.mfa_acr_values:
        extra["acr_values"] = provider.mfa_acr_values
    url: str = prepare_grant_uri(
        meta.authorization_endpoint,
        provider.client_id,
        "code",
        redirect_uri=redirect_uri,
        scope=" ".join(provider.scopes),
        state=state,
        **extra,
    )
    return url


def _refusal(provider: OidcProviderSettings, refused: _Refused) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"sign-in provider {provider.name} refused the sign-in ({refused.error}: "
        f"{refused.description or 'no reason given'}); start again",
        reason=refused.error,
    )


def exchange_code(
    provider: OidcProviderSettings, *, code: str, redirect_uri: str, code_verifier: str
) -> dict[str, Any]:
    """Trade an authorization code for tokens; a refused code is an :class:`AuthenticationFailed`."""
    meta = metadata(provider)
    response = _post(
        provider,
        meta.token_endpoint,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        },
    )
    try:
        return _json_answer(provider, response, "token request")
    except _Refused as refused:
        raise _refusal(provider, refused) from None


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


def start_device(provider: OidcProviderSettings, *, mfa: bool, nonce: str) -> DeviceAuthorization:
    """Ask the provider for a device code (RFC 8628, section 3.1)."""
    meta = metadata(provider)
    if not meta.device_authorization_endpoint:
        raise AuthenticationFailed(
            f"sign-in provider {provider.name} does not offer the device grant",
            reason="no_device_grant",
        )
    data = {"scope": " ".join(provider.scopes), "nonce": nonce}
    if mfa and provider.mfa_acr_values:
        data["acr_values"] = provider.mfa_acr_values
    response = _post(provider, meta.device_authorization_endpoint, data)
    try:
        answer = _json_answer(provider, response, "device code request")
    except _Refused as refused:
        raise ProviderUnavailable(
            f"sign-in provider {provider.name} did not give a device code "
            f"({refused.error}: {refused.description or 'no reason given'})",
            provider=provider.name,
        ) from None
    try:
        return DeviceAuthorization(
            device_code=str(answer["device_code"]),
            user_code=str(answer["user_code"]),
            verification_uri=str(answer["verification_uri"]),
            verification_uri_complete=answer.get("verification_uri_complete"),
            expires_in=int(answer.get("expires_in", 600)),
            interval=int(answer.get("interval", 5)),
        )
    except (KeyError, TypeError, ValueError):
        raise ProviderUnavailable(
            f"sign-in provider {provider.name}'s device code answer lacks a field RFC 8628 requires",
            provider=provider.name,
        ) from None


class Pending(Exception):
    """The person has not finished at the provider yet: poll again after ``interval`` seconds."""

    def __init__(self, interval_increase: int = 0) -> None:
        super().__init__("authorization pending")
        self.interval_increase = interval_increase


def poll_device(provider: OidcProviderSettings, device_code: str) -> dict[str, Any]:
    """One poll of the token endpoint for a device code (RFC 8628, section 3.4 and 3.5)."""
    meta = metadata(provider)
    response = _post(provider, meta.token_endpoint, {"grant_type": DEVICE_GRANT, "device_code": device_code})
    try:
        return _json_answer(provider, response, "token request")
    except _Refused as refused:
        match refused.error:
            case "authorization_pending":
                raise Pending() from None
            case "slow_down":
                raise Pending(interval_increase=5) from None
            case "access_denied":
                raise AuthenticationFailed(
                    f"the sign-in was denied at {provider.name}; start again if that was a mistake",
                    reason="access_denied",
                ) from None
            case "expired_token":
                raise AuthenticationFailed(
                    "the device code expired before the sign-in was finished; start again",
                    reason="expired_token",
                ) from None
        raise _refusal(provider, refused) from None


@dataclass(frozen=True)
class VerifiedIdentity:
    issuer: str
    subject: str
    claims: dict[str, Any]
    acr: str | None


def verify_id_token(
    provider: OidcProviderSettings, token_response: dict[str, Any], nonce: str, *, nonce_required: bool = True
) -> VerifiedIdentity:
    """Verify the ID token of a token response: signature by one of the provider's published keys,
    issuer, audience (and ``azp`` when there are several), expiry and ``nonce``."""
    id_token = token_response.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise ProviderUnavailable(
            f"sign-in provider {provider.name} gave no ID token (is 'openid' among the scopes?)",
            provider=provider.name,
        )
    meta = metadata(provider)
    token = _decode(provider, meta, id_token)
    claims = dict(token.claims)
    registry = jwt.JWTClaimsRegistry(
        leeway=LEEWAY,
        iss={"essential": True, "value": meta.issuer},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    refused = "the sign-in was refused: the provider's ID token"
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise AuthenticationFailed(
            f"{refused} has expired; sign in again", reason="id_token_expired"
        ) from None
    except InvalidClaimError as exc:
        raise AuthenticationFailed(
            f"{refused} has a wrong '{exc.claim}' (expected from {meta.issuer})", reason="id_token_claim"
        ) from None
    except MissingClaimError as exc:
        raise AuthenticationFailed(f"{refused} lacks '{exc.claim}'", reason="id_token_claim") from None
    except JoseError as exc:
        raise AuthenticationFailed(f"{refused} is not valid ({exc.error})", reason="id_token_claim") from None
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else list(audience or [])
    if provider.client_id not in audiences or (
        len(audiences) > 1 and claims.get("azp") != provider.client_id
    ):
        raise AuthenticationFailed(
            f"{refused} was issued for another client ({', '.join(map(str, audiences)) or 'none'}), "
            f"not {provider.client_id}",
            reason="id_token_audience",
        )
    if claims.get("nonce") != nonce and (nonce_required or "nonce" in claims):
        raise AuthenticationFailed(
            f"{refused} does not carry this sign-in's nonce (a replayed or mixed-up answer); start again",
            reason="id_token_nonce",
        )
    acr = claims.get("acr")
    return VerifiedIdentity(
        issuer=meta.issuer,
        subject=str(claims["sub"]),
        claims=claims,
        acr=acr if isinstance(acr, str) else None,
    )


def _decode(provider: OidcProviderSettings, meta: Metadata, id_token: str) -> jwt.Token:
    refused = "the sign-in was refused: the provider's ID token"
    for fresh in (False, True):
        keys = _keys(provider, meta, fresh=fresh)
        try:
            return jwt.decode(id_token, keys, algorithms=ALGORITHMS)
        except (InvalidKeyIdError, BadSignatureError) as exc:
            if not fresh:
                continue  # the provider may have rotated its keys since they were fetched
            if isinstance(exc, InvalidKeyIdError):
                raise AuthenticationFailed(
                    f"{refused} is signed by a key {provider.name} does not publish", reason="id_token_key"
                ) from None
            raise AuthenticationFailed(
                f"{refused} has a signature that no key {provider.name} publishes verifies",
                reason="id_token_signature",
            ) from None
        except UnsupportedAlgorithmError:
            raise AuthenticationFailed(
                f"{refused} is unsigned or signed with an algorithm levere does not accept",
                reason="id_token_signature",
            ) from None
        except (ValueError, JoseError) as exc:
            raise AuthenticationFailed(
                f"{refused} is malformed ({type(exc).__name__})", reason="id_token_signature"
            ) from None
    raise AssertionError("unreachable: the second pass returns or raises")


def userinfo(provider: OidcProviderSettings, token_response: dict[str, Any], subject: str) -> dict[str, Any]:
    """The claims of the userinfo endpoint (where many providers put ``email`` and ``name`` rather
    than in the ID token), or none when there is no endpoint, no access token, or no usable answer.

    Only for showing people who they are: nothing is decided on these claims, so a provider whose
    userinfo endpoint fails does not fail the sign-in. An answer about another subject is ignored
    (OpenID Connect Core 1.0, section 5.3.2)."""
    meta = metadata(provider)
    access_token = token_response.get("access_token")
    if not meta.userinfo_endpoint or not isinstance(access_token, str):
        return {}
    try:
        response = httpx.get(
            meta.userinfo_endpoint,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=provider.timeout_seconds,
            follow_redirects=False,
        )
        claims = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return {}
    if not isinstance(claims, dict) or claims.get("sub") != subject:
        return {}
    return claims
