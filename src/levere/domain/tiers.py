"""Storage tiers and the placement policy: which tier holds a project's data for which purpose.

A tier is a role in the process (the working area, long-term storage, the secure zone); a backend
is where a tier's bytes live, built from configuration. Use cases never name a tier: they ask
:func:`place` where a project's data goes for a purpose, and copy, read and repair along the paths
the answer gives.

Design notes
------------
* :class:`Tier` values are the configuration's ``[tiers]`` names and the words stored in replica
  and quota rows, so a ``Tier`` compares equal to what the database holds.
* Whether a tier is write-once, and whether it may hold a sensitive project's plaintext, are
  properties of the tier (:data:`TIER_PROPERTIES`), not of a name compared in the callers.
* A sensitive project keeps its data only on the secure tier: its own storage there
  (:attr:`Purpose.SECURE_ZONE`) and the shared disk the facility delivers to
  (:attr:`Purpose.SHARED_DISK`). It has no working area: asking for :attr:`Purpose.LANDING` raises
  :class:`SensitiveNotOffered`, before anything is stored, so a sensitive project's data never lands
  in plaintext on an ordinary tier. A delivery into a sensitive project names a shared disk and
  lands on it (``SHARED_DISK``); the secure tier's backend always carries the Crypt4GH layer
  (:mod:`levere.storage.encrypting`), so what is stored there is only ever encrypted bodies.
* Its long-term copies (:attr:`Purpose.LONGTERM`) are the secure tier's Crypt4GH bodies copied as
  they are (headers stay in the database), so long-term holds only ciphertext of it: sync copies
  from the secure tier, restore copies back to it (its :attr:`Purpose.SECURE_ZONE`, the
  kind's :func:`working_purpose`), and each repairs the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from levere.domain.errors import NoPlacement, SensitiveNotOffered


class Tier(StrEnum):
    AREA = "area"
    LONGTERM = "longterm"
    SECURE = "secure"


@dataclass(frozen=True)
class TierProperties:
    #: an object once written is never replaced or deleted by levere
    write_once: bool
    #: the tier may hold a sensitive project's data in plaintext (none may: sensitive data is only
    #: ever stored encrypted)
    sensitive_plaintext: bool
    #: the tier in the user's words
    words: str
    #: a project's data here counts against the project's quota on the tier (the secure zone's
    #: space is the shared disk's and the secure project's, not the research project's)
    project_quota: bool = True


TIER_PROPERTIES: dict[Tier, TierProperties] = {
    Tier.AREA: TierProperties(write_once=False, sensitive_plaintext=False, words="the project area"),
    Tier.LONGTERM: TierProperties(write_once=True, sensitive_plaintext=False, words="long-term storage"),
    Tier.SECURE: TierProperties(
        write_once=False, sensitive_plaintext=False, words="the secure zone", project_quota=False
    ),
}


def tier_words(tier: str) -> str:
    """A tier (or a tier name read from a row) in the user's words."""
    try:
        return TIER_PROPERTIES[Tier(tier)].words
    except ValueError:
        return f"tier {tier!r}"


class ProjectKind(StrEnum):
    NON_SENSITIVE = "non-sensitive"
    SENSITIVE = "sensitive"

    @classmethod
    def of(cls, sensitive: bool) -> ProjectKind:
        """The kind of a project from its ``sensitive`` flag."""
        return cls.SENSITIVE if sensitive else cls.NON_SENSITIVE


class Purpose(StrEnum):
    #: where deliveries land and members work
    LANDING = "landing"
    #: the verified, write-once copy of sealed deliveries
    LONGTERM = "long-term"
    #: a sensitive project's own storage in the secure zone (Crypt4GH bodies, headers apart)
    SECURE_ZONE = "secure zone"
    #: the disk a facility and a sensitive project share for a delivery, until it is released
    SHARED_DISK = "shared disk"


@dataclass(frozen=True)
class Placement:
    """Where a project of one kind keeps its data for one purpose, and the copy paths around it."""

    kind: ProjectKind
    purpose: Purpose
    #: the tier that holds the data for this purpose
    tier: Tier
    #: the tier a copy for this purpose is made from (sync makes the long-term copy from the
    #: landing area; restore makes the landing copy again from long-term); None: only delivered
    source: Tier | None
    #: the copies a reader may read a file from, in the order to try them
    reads: tuple[Tier, ...]
    #: the copies a damaged copy on :attr:`tier` may be repaired from, in the order to try them
    repairs_from: tuple[Tier, ...]

    @property
    def write_once(self) -> bool:
        return TIER_PROPERTIES[self.tier].write_once


@dataclass(frozen=True)
class CopyPath:
    """One direction of copying between two tiers."""

    source: Tier
    target: Tier

    @property
    def write_once(self) -> bool:
        return TIER_PROPERTIES[self.target].write_once


#: a non-sensitive project: deliveries land on the working area, sync copies them to long-term,
#: restore copies them back; a reader tries the working copy first, then long-term
_NON_SENSITIVE: dict[Purpose, tuple[Tier, Tier]] = {
    Purpose.LANDING: (Tier.AREA, Tier.LONGTERM),
    Purpose.LONGTERM: (Tier.LONGTERM, Tier.AREA),
}
_READS = (Tier.AREA, Tier.LONGTERM)
#: a sensitive project: the shared disk and the project's own storage both live on the secure
#: tier; release moves data from one to the other by re-encrypting headers (no copy between tiers).
#: Sync copies the released bodies to long-term and restore copies them back: (tier, copied from);
#: a shared disk's data is the facility's until release and is never copied off the secure tier
_SENSITIVE: dict[Purpose, tuple[Tier, Tier | None]] = {
    Purpose.LONGTERM: (Tier.LONGTERM, Tier.SECURE),
    Purpose.SECURE_ZONE: (Tier.SECURE, Tier.LONGTERM),
    Purpose.SHARED_DISK: (Tier.SECURE, None),
}
#: where each kind of project's data is worked on, and restored to from long-term
_WORKING: dict[ProjectKind, Purpose] = {
    ProjectKind.NON_SENSITIVE: Purpose.LANDING,
    ProjectKind.SENSITIVE: Purpose.SECURE_ZONE,
}


def place(kind: ProjectKind, purpose: Purpose) -> Placement:
    """Which tier holds a project's data for ``purpose``, where copies for it come from, and which
    copies reads and repairs may use. Raises :class:`NoPlacement` when there is none."""
    if kind is ProjectKind.SENSITIVE:
        if purpose not in _SENSITIVE:
            raise SensitiveNotOffered(
                "this project holds sensitive data, which is delivered and kept only in the secure zone, "
                "encrypted: deliver it onto the project's shared disk (name the disk); nothing is stored "
                f"for this project's {purpose.value}",
                kind=kind.value,
                purpose=purpose.value,
            )
        tier, copied = _SENSITIVE[purpose]
        if copied is None:
            return Placement(kind, purpose, tier, source=None, reads=(tier,), repairs_from=())
        return Placement(
            kind, purpose, tier, source=copied, reads=(Tier.SECURE, Tier.LONGTERM), repairs_from=(copied,)
        )
    if purpose not in _NON_SENSITIVE:
        raise NoPlacement(
            f"the {purpose.value} is for sensitive projects only; this project is not sensitive",
            kind=kind.value,
            purpose=purpose.value,
        )
    tier, other = _NON_SENSITIVE[purpose]
    return Placement(kind, purpose, tier, source=other, reads=_READS, repairs_from=(other,))


def placements(kind: ProjectKind) -> tuple[Placement, ...]:
    """Every placement a project of ``kind`` has (none for a purpose it cannot use)."""
    found = []
    for purpose in Purpose:
        try:
            found.append(place(kind, purpose))
        except NoPlacement:
            continue
    return tuple(found)


def placement_on(kind: ProjectKind, tier: str) -> Placement:
    """The placement whose data lives on ``tier`` (read from a replica row) for a project of ``kind``."""
    for placement in placements(kind):
        if placement.tier == tier:
            return placement
    raise NoPlacement(
        f"a {kind.value} project keeps no data on {tier_words(tier)}", kind=kind.value, tier=tier
    )


def sync_path(kind: ProjectKind) -> CopyPath:
    """Where sync copies a project's sealed deliveries from and to."""
    return _copied(place(kind, Purpose.LONGTERM))


def restore_path(kind: ProjectKind) -> CopyPath:
    """Where restore copies a project's freed files from and to."""
    return _copied(place(kind, working_purpose(kind)))


def working_purpose(kind: ProjectKind) -> Purpose:
    """The purpose whose copy of a project's files is the one worked on, freed once long-term holds
    them, and restored from long-term: the landing area, or a sensitive project's secure zone."""
    return _WORKING[kind]


def _copied(placed: Placement) -> CopyPath:
    if placed.source is None:
        raise NoPlacement(
            f"nothing copies a {placed.kind.value} project's {placed.purpose.value} data to "
            f"{tier_words(placed.tier)}",
            kind=placed.kind.value,
            purpose=placed.purpose.value,
        )
    return CopyPath(placed.source, placed.tier)


def tiers_for(purpose: Purpose) -> tuple[Tier, ...]:
    """Every tier that holds some kind of project's data for ``purpose`` (for queries over all
    projects, such as the long-term copies that failed anywhere)."""
    found: list[Tier] = []
    for kind in ProjectKind:
        try:
            tier = place(kind, purpose).tier
        except NoPlacement:
            continue
        if tier not in found:
            found.append(tier)
    return tuple(found)


def placed_tiers() -> tuple[Tier, ...]:
    """Every tier where some kind of project keeps data, in placement order."""
    found: list[Tier] = []
    for kind in ProjectKind:
        for placed in placements(kind):
            if placed.tier not in found:
                found.append(placed.tier)
    return tuple(found)
