"""Deliveries and uploads: their states and the one table of allowed transitions for each."""

from __future__ import annotations

from enum import StrEnum

from levere.domain.errors import InvalidTransition


class DeliveryState(StrEnum):
    OPEN = "open"  # accepting files
    SEALED = "sealed"  # immutable; its manifest is fixed
    FAILED = "failed"  # verification against the run's checksum file failed


class UploadState(StrEnum):
    ACTIVE = "active"  # bytes may still arrive; its length is reserved against the quota
    COMPLETE = "complete"  # published as a file of the delivery
    FAILED = "failed"  # refused (checksum mismatch, bytes lost); reservation given back
    EXPIRED = "expired"  # abandoned; reservation given back
    TERMINATED = "terminated"  # cancelled by the client; reservation given back


DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.OPEN: frozenset({DeliveryState.SEALED, DeliveryState.FAILED}),
    DeliveryState.SEALED: frozenset(),
    DeliveryState.FAILED: frozenset(),
}

UPLOAD_TRANSITIONS: dict[UploadState, frozenset[UploadState]] = {
    UploadState.ACTIVE: frozenset(
        {UploadState.COMPLETE, UploadState.FAILED, UploadState.EXPIRED, UploadState.TERMINATED}
    ),
    UploadState.COMPLETE: frozenset(),
    UploadState.FAILED: frozenset(),
    UploadState.EXPIRED: frozenset(),
    UploadState.TERMINATED: frozenset(),
}


def delivery_transition(current: str, target: DeliveryState, name: str) -> DeliveryState:
    state = DeliveryState(current)
    if target not in DELIVERY_TRANSITIONS[state]:
        raise InvalidTransition(
            f"delivery {name} is {state.value}; it cannot become {target.value}", state=state.value
        )
    return target


def upload_transition(current: str, target: UploadState) -> UploadState:
    state = UploadState(current)
    if target not in UPLOAD_TRANSITIONS[state]:
        raise InvalidTransition(
            f"the upload is {state.value}; it cannot become {target.value}", state=state.value
        )
    return target
