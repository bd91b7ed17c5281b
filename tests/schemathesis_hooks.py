"""Loaded by schemathesis (``SCHEMATHESIS_HOOKS``) in the contract test: levere's binary request
bodies (a tus chunk, a tar stream) are sent as the raw bytes generated for them."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/x-tar"], "application/octet-stream"
)
