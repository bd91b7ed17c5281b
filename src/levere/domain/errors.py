"""One error hierarchy for the whole service.

Each error carries a message in the user's words, a ``code`` that front ends and scripts can rely on,
and ``details`` for the facts behind the message. The API maps ``http_status`` to the response code;
the CLI prints the message on one line (with a hint of its own, chosen by ``code``) and exits with
``exit_code``. Messages say what happened, never which command to run: that is the front end's word.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LevereError(Exception):
    http_status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 1
    #: a class attribute; an error rebuilt from an API answer keeps the answer's code on the instance
    code: str = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ValidationFailed(LevereError):
    """Input was refused; ``details['fields']`` maps each field to its reason."""

    http_status = 422
    code = "validation_failed"

    def __init__(self, fields: dict[str, str]) -> None:
        listed = "; ".join(f"{name}: {reason}" for name, reason in fields.items())
        super().__init__(f"invalid input: {listed}", fields=fields)
        self.fields = fields


class NotFound(LevereError):
    http_status = 404
    exit_code = 4
    code = "not_found"


class AlreadyExists(LevereError):
    http_status = 409
    code = "already_exists"


class AlreadyInvited(AlreadyExists):
    """Someone is invited and has not set a password yet (``details['email']``): a new link is a resend."""

    code = "already_invited"


class Conflict(LevereError):
    http_status = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class NotSynced(Conflict):
    """Files are not safely on long-term storage yet, so they cannot be freed or restored."""

    code = "not_synced"


class NoIntactCopy(Conflict):
    """Every copy of a file is damaged or missing: reading it again will not help."""

    exit_code = 5
    code = "no_intact_copy"


class NoPlacement(LevereError):
    """A project's data has nowhere to go for a purpose (see :mod:`levere.domain.tiers`);
    nothing was stored. Not a :class:`Conflict`: no retry or second request can succeed."""

    http_status = 409
    code = "no_placement"


class SensitiveNotOffered(NoPlacement):
    """A sensitive project's data goes only through the secure zone, which levere does not offer yet."""

    code = "sensitive_not_offered"


class AuthenticationFailed(LevereError):
    http_status = 401
    exit_code = 3
    code = "authentication_failed"


class NotSignedIn(AuthenticationFailed):
    """No saved sign-in: nothing was sent to the service."""

    exit_code = 9
    code = "not_signed_in"


class OneTimeCodeUsed(AuthenticationFailed):
    """The password was right and the one-time code too, but that code was already used once."""

    code = "one_time_code_used"


class OneTimeCodeWrong(AuthenticationFailed):
    """The password was right but the one-time code is wrong or from a step that has passed."""

    code = "one_time_code_wrong"


class TooManyAttempts(LevereError):
    http_status = 429
    exit_code = 3
    code = "too_many_attempts"


class AccessDenied(LevereError):
    http_status = 403
    exit_code = 3
    code = "access_denied"


class DiskReadOnly(Conflict):
    """A shared disk past its end date, released or destroyed takes no more writes."""

    code = "disk_read_only"


class InvalidPath(LevereError):
    http_status = 400
    code = "invalid_path"


class ChecksumMismatch(LevereError):
    http_status = 460  # tus checksum extension: "Checksum Mismatch"
    exit_code = 5
    code = "checksum_mismatch"


class ChecksumFileRequired(Conflict):
    """The facility requires every delivered file to be listed in the run's checksum file."""

    exit_code = 5
    code = "checksum_file_required"


class QuotaExceeded(LevereError):
    http_status = 507
    exit_code = 6
    code = "quota_exceeded"


class BodyTooLarge(LevereError):
    """A request body larger than the route accepts; refused before it is read in full."""

    http_status = 413
    code = "body_too_large"

    def __init__(self, limit_bytes: int) -> None:
        from levere.domain.units import format_size

        super().__init__(
            f"the request body is too large: this address takes at most {format_size(limit_bytes)}",
            limit_bytes=limit_bytes,
        )


class StorageUnavailable(LevereError):
    http_status = 503
    exit_code = 7
    code = "storage_unavailable"


class StorageFull(LevereError):
    """A storage tier has no room left (a full file system, a file-system or object-store quota):
    unlike :class:`QuotaExceeded` (the project's own quota) nothing the caller does will help until
    someone frees space, so clients stop rather than retry."""

    http_status = 507
    exit_code = 10
    code = "storage_full"


class NotCrypt4GH(LevereError):
    """Bytes claimed to be a Crypt4GH file are not one (or use a feature levere does not accept)."""

    http_status = 422
    code = "not_crypt4gh"


class EncryptedToAnotherKey(LevereError):
    """A Crypt4GH file whose header none of the expected private keys opens."""

    http_status = 422
    code = "encrypted_to_another_key"


class CiphertextDamaged(LevereError):
    """A Crypt4GH body segment failed its authentication: the bytes were changed or cut short."""

    http_status = 422
    exit_code = 5
    code = "ciphertext_damaged"


class InvalidPublicKey(LevereError):
    """A public key that is not a valid Crypt4GH/X25519 key."""

    http_status = 422
    code = "invalid_public_key"


class InvalidSecretKey(LevereError):
    """A secret key file that cannot be read, or a passphrase that does not unlock it."""

    http_status = 422
    code = "invalid_secret_key"


class ProviderUnavailable(LevereError):
    """A sign-in provider (OpenID Connect) did not answer, or answered something that is not the
    protocol: nothing was changed, and trying again later may work."""

    http_status = 502
    exit_code = 7
    code = "provider_unavailable"


class InvalidFastq(LevereError):
    """A stream handed to the standard analysis is not FASTQ, or holds a record that breaks the
    format; ``details`` name the file and, where the parser knows it, the line."""

    http_status = 422
    code = "invalid_fastq"


class TruncatedFastq(InvalidFastq):
    """The stream ends inside a record or inside its gzip compression: the file is incomplete."""

    code = "truncated_fastq"


class ConfigurationError(LevereError):
    exit_code = 2
    code = "configuration_error"


def by_code(code: str) -> type[LevereError] | None:
    """The error class with this ``code`` (as an API answer names it), if levere has one."""
    pending: list[type[LevereError]] = [LevereError]
    while pending:
        kind = pending.pop()
        if kind.code == code:
            return kind
        pending.extend(kind.__subclasses__())
    return None


def from_name(name: str, message: str) -> LevereError:
    """The error a child process reported by its class name (exceptions with extra details do
    not survive pickling, so children send the name and message), as its own class again."""
    kind = globals().get(name)
    if isinstance(kind, type) and issubclass(kind, LevereError) and kind is not ValidationFailed:
        try:
            return kind(message)
        except TypeError:  # an error with a constructor of its own
            return LevereError(message)
    return LevereError(message)


class NoHeader(Conflict):
    """A zone file holds no Crypt4GH header for the key asked to read it (a facility after release,
    a destroyed shared disk)."""

    code = "no_header"


class ReleasedNoAccess(AccessDenied):
    """A delivery released from its shared disk to the users' secure project: nothing of it is
    listed or read through the disk any more (the facility has no access to it at all)."""

    code = "released_no_access"


class AlreadyReleased(Conflict):
    """A delivery that was released already: a release happens once."""

    code = "already_released"
