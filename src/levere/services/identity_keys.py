"""Crypt4GH public keys from sign-in identities: the default recipients of secure-zone downloads.

Design notes
------------
A provider such as Life Science Login may release the Crypt4GH public keys a person registered
there (the ``crypt4ghPublicKeys`` claim; the claim's name is configurable per provider, as
``claims.crypt4gh_public_keys``). At every federated sign-in (:func:`keys_from_claims`) each
released key is read with :class:`levere.crypt4gh.keys.PublicKey` (a Crypt4GH PEM block or its bare
base64 line; 32 bytes; not a low-order X25519 point), and the valid ones replace what the linked
identity held, so a key withdrawn at the provider is gone here after the next sign-in. An invalid
entry is left out with a warning that names the provider, the identity's link and the reason, never
the entry itself (a person may paste a secret key where the public one belongs). A change is an
audit event.

:func:`default_recipient_keys` gives the keys of every identity linked to an account, each once:
what a secure-zone download encrypts to when the member names no key of their own.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from levere.config import OidcProviderSettings
from levere.context import Context
from levere.crypt4gh.keys import PublicKey
from levere.db.models import FederatedIdentity, User
from levere.domain.errors import InvalidPublicKey
from levere.services import audit
from levere.services.views import RecipientKeyView

log = logging.getLogger(__name__)

#: the claim Life Science Login releases the keys in
DEFAULT_CLAIM = "crypt4ghPublicKeys"
#: more entries than this in one claim are not read (a key is ~100 characters)
MAX_KEYS = 16
MAX_ENTRY = 2048


def claim_name(p: OidcProviderSettings) -> str:
    return p.claims.get("crypt4gh_public_keys", DEFAULT_CLAIM)


def keys_from_claims(p: OidcProviderSettings, claims: dict[str, Any], link_id: str) -> list[str] | None:
    """The valid keys of the claim as PEM, each once; ``None`` when the provider released no such
    claim (what the identity holds is then left as it is)."""
    value = claims.get(claim_name(p))
    if value is None:
        return None
    entries = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    if not isinstance(value, str | list):
        log.warning("sign-in provider %s: %s of identity %s is not a list of keys; ignored",
                    p.name, claim_name(p), link_id)  # fmt: skip
    found: list[str] = []
    for number, entry in enumerate(entries[:MAX_KEYS], start=1):
        try:
            if not isinstance(entry, str) or len(entry) > MAX_ENTRY:
                raise InvalidPublicKey("it is not a key's text")
            pem = PublicKey.from_pem(entry).to_pem()
        except InvalidPublicKey as exc:
            log.warning("sign-in provider %s: entry %d of %s of identity %s is not a Crypt4GH public key "
                        "(%s); ignored", p.name, number, claim_name(p), link_id, exc.message)  # fmt: skip
            continue
        if pem not in found:
            found.append(pem)
    if len(entries) > MAX_KEYS:
        log.warning("sign-in provider %s: %s of identity %s has %d entries; the first %d were read",
                    p.name, claim_name(p), link_id, len(entries), MAX_KEYS)  # fmt: skip
    return found


def record(session: Session, user: User, link: FederatedIdentity, keys: list[str] | None) -> None:
    """Keep the keys a sign-in released on its identity (inside the sign-in's transaction)."""
    if keys is None or keys == list(link.crypt4gh_public_keys or []):
        return
    before = [PublicKey.from_pem(k).fingerprint for k in link.crypt4gh_public_keys or []]
    link.crypt4gh_public_keys = keys
    audit.record(
        session, user, "identity.keys_updated", "user", user.id,
        before={"provider": link.provider, "subject": link.subject, "crypt4gh_keys": before},
        after={"crypt4gh_keys": [PublicKey.from_pem(k).fingerprint for k in keys]},
    )  # fmt: skip


def default_recipient_keys(ctx: Context, user: User) -> list[RecipientKeyView]:
    """The Crypt4GH public keys of ``user``'s linked identities, oldest link first, each once."""
    with ctx.tx() as session:
        links = session.execute(
            select(FederatedIdentity.provider, FederatedIdentity.crypt4gh_public_keys)
            .where(FederatedIdentity.user_id == user.id)
            .order_by(FederatedIdentity.created_at)
        ).all()
    views: list[RecipientKeyView] = []
    seen: set[str] = set()
    for provider, keys in links:
        for pem in keys or []:
            try:
                key = PublicKey.from_pem(pem)
            except InvalidPublicKey:  # stored keys were checked; one changed behind levere is skipped
                log.warning("a stored Crypt4GH key of a %s identity is not valid; skipped", provider)
                continue
            if key.fingerprint not in seen:
                seen.add(key.fingerprint)
                views.append(
                    RecipientKeyView(provider=provider, fingerprint=key.fingerprint, pem=key.to_pem())
                )
    return views
