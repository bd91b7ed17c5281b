"""The OpenAPI document as a contract a generated client can trust.

Routes declare what is particular to them in their decorators: a summary, a stable ``operation_id``
and, through the helpers here, the errors their services raise (``errors(404, 409)``), their
non-JSON bodies and their headers. What follows from a route's shape is added to every operation
when the document is built (:func:`install`), so that no route can forget it:

- a route that needs a token declares the bearer scheme and answers 401 (no or a bad token) and 403
  (a token without the scope, or a caller without the role);
- a route with parameters or a body answers 422 when they do not validate;
- a route with a body answers 413 when it is larger than the server takes.

Every error is documented with levere's error body (:class:`~levere.api.schemas.ErrorOut`), never
FastAPI's default validation body, which levere does not send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from levere.api.schemas import ErrorOut
from levere.transfer import tus, wire

#: the bearer scheme every signed-in route names (the token ``levere login`` or ``/auth/login`` gives)
BEARER = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="opaque levere token",
    description="A token from POST /api/auth/login or POST /api/me/tokens, as `Authorization: Bearer TOKEN`.",
    auto_error=False,  # levere's own dependency words the 401
)

#: what each error status means, as the document says it
ERRORS: dict[int, str] = {
    400: "Refused input: a body that is not JSON, or a path, name or stream levere cannot take",
    401: "No bearer token, or one that is unknown, expired or revoked",
    403: "The token lacks the scope, or the caller the role, that this needs",
    404: "No such object, or none the caller may know of",
    409: "The object's state does not allow this, or it exists already",
    412: "Tus-Resumable names a tus version this server does not speak",
    413: "The request body is larger than the server takes",
    415: "The body is not of the content type this route takes",
    416: "The range asked for lies outside the file",
    422: "A field is missing or invalid; details.fields names each with its reason",
    429: "Too many failed sign-ins: wait and try again",
    460: "The bytes that arrived do not match their checksum; nothing of them was stored",
    502: "The sign-in provider did not answer, or answered something that is not OpenID Connect",
    503: "A storage tier is unreachable: try again later",
    507: "The project's quota, or the server's storage, has no room for this",
}

ERROR_REF = "#/components/schemas/ErrorOut"
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": ERROR_REF}}}
#: errors of every route that writes data (tus uploads, tar batches, restores)
DATA_WRITE = (503, 507)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the errors a route's services raise, each with levere's error body."""
    return {status: {"description": ERRORS[status], "content": _ERROR_CONTENT} for status in statuses}


def _header(description: str, type_: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": type_}}


TUS_RESUMABLE = _header("The tus version of the answer: 1.0.0")
UPLOAD_HEADERS = {
    "Tus-Resumable": TUS_RESUMABLE,
    "Upload-Offset": _header("Bytes durably stored: resume from here", "integer"),
    "Upload-Length": _header("The file's length in bytes", "integer"),
    "Upload-Expires": _header("When an unfinished upload is dropped (an HTTP date)"),
    wire.CHECKSUM_HEADER: _header("md5=HEX,sha256=HEX of the whole file, once its last byte is in"),
}
FILE_HEADERS = {
    "ETag": _header("The file's SHA-256 in quotes: a strong validator for If-None-Match and If-Range"),
    "Accept-Ranges": _header("bytes"),
    wire.CHECKSUM_HEADER: _header("md5=HEX,sha256=HEX of the whole file, to verify what was saved"),
    "Content-Disposition": _header("attachment; with the file's name"),
}


def tus_errors(*more: int) -> dict[int | str, dict[str, Any]]:
    """What a tus answer may be besides success; each carries Tus-Resumable and levere's error body."""
    return errors(404, 412, 503, *more)


OPTIONS_HEADERS = {
    name: {"description": f"{name} of this server", "schema": {"type": "string"}}
    for name in tus.options_headers()
}
CREATED_HEADERS = {
    "Location": {"description": "The upload's URL", "schema": {"type": "string"}},
    **UPLOAD_HEADERS,
}


def _tus_parameter(name: str, description: str, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


_TUS_VERSION_PARAMETER = _tus_parameter(
    "Tus-Resumable", "The tus version the client speaks", True, {"type": "string", "enum": [tus.VERSION]}
)


def tus_request(*headers: str, body: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a tus request: the headers it takes and, if it has one, its body.

    ``body`` is ``"required"`` or ``"optional"`` (creation-with-upload may send the first bytes).
    """
    known: dict[str, tuple[str, dict[str, Any]]] = {
        "Upload-Length": ("The file's length in bytes", {"type": "integer", "minimum": 0}),
        "Upload-Metadata": (
            "Comma-separated `key base64(value)` pairs: project, delivery, path, and optionally the "
            "whole file's md5 and sha256 (hex)",
            {"type": "string"},
        ),
        "Upload-Offset": (
            "Where this body starts: the offset a HEAD gave",
            {"type": "integer", "minimum": 0},
        ),
        "Upload-Checksum": (
            f"`ALGORITHM base64(digest)` of this body ({', '.join(tus.CHECKSUM_ALGORITHMS)})",
            {"type": "string"},
        ),
    }
    parameters = [_TUS_VERSION_PARAMETER]
    for name in headers:
        description, schema = known[name]
        parameters.append(
            _tus_parameter(name, description, name in ("Upload-Length", "Upload-Offset"), schema)
        )
    extra: dict[str, Any] = {"parameters": parameters}
    if body is not None:
        extra["requestBody"] = binary_body(tus.OFFSET_CONTENT_TYPE, required=body == "required")
    return extra


def binary_body(media_type: str, *, required: bool = True, description: str = "") -> dict[str, Any]:
    """A request body of raw bytes (a tus chunk, a tar stream)."""
    return {
        "required": required,
        "description": description,
        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
    }


def success(
    description: str,
    *,
    media_types: Mapping[str, dict[str, Any]] | None = None,
    headers: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One success answer with its content (``None``: no body) and headers."""
    answer: dict[str, Any] = {"description": description}
    if media_types:
        answer["content"] = dict(media_types)
    if headers:
        answer["headers"] = dict(headers)
    return answer


BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
TEXT = {"text/plain": {"schema": {"type": "string"}}}

#: models named in ``responses=`` by :func:`model_content`, added to the document's components
_EXTRA_MODELS: dict[str, type[BaseModel]] = {}


def model_content(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON content of an answer whose route returns a plain Response (so FastAPI cannot see
    its model): the model goes into the document's components."""
    _EXTRA_MODELS[model.__name__] = model
    return {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}


class OctetStreamResponse(Response):
    """For the document: the route answers raw bytes (the route builds its own Response)."""

    media_type = "application/octet-stream"


def _request_header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


#: ``openapi_extra`` of a download: the conditional and range headers it honours
CONDITIONAL_HEADERS: dict[str, Any] = {
    "parameters": [
        _request_header(
            "Range", "One range of bytes, e.g. `bytes=1000-` to resume (206, or 416 outside the file)"
        ),
        _request_header(
            "If-Range", "The ETag the first part came with: the range is served only if it still holds"
        ),
        _request_header(
            "If-None-Match", "ETags (a list, weak or strong, or `*`): 304 without the bytes if one matches"
        ),
    ]
}
_RANGE_HEADERS = {**FILE_HEADERS, "Content-Range": _header("bytes FIRST-LAST/SIZE")}
#: ``responses=`` of a download (GET or HEAD)
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: success("The whole file", media_types=BINARY, headers=FILE_HEADERS),
    206: success("The range asked for", media_types=BINARY, headers=_RANGE_HEADERS),
    304: success("If-None-Match matched: the file is as the client has it", headers=FILE_HEADERS),
    **errors(400, 404, 503),
    416: {
        "description": ERRORS[416],
        "content": _ERROR_CONTENT,
        "headers": {"Content-Range": _header("bytes */SIZE: the file's size")},
    },
}


def _complete(operation: dict[str, Any], method: str) -> None:
    """Add to one operation the errors that follow from its shape (see the module's docstring)."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    derived: list[int] = []
    if operation.get("security"):
        derived += [401, 403]
    if operation.get("parameters") or operation.get("requestBody"):
        derived.append(422)
    if operation.get("requestBody"):
        derived.append(413)
        if "application/json" in operation["requestBody"].get("content", {}):
            derived.append(400)  # a body that is not JSON at all
    for code in derived:
        responses[str(code)] = {"description": ERRORS[code], "content": _ERROR_CONTENT}
    for status, answer in responses.items():
        if status.startswith(("4", "5")):
            answer["content"] = _ERROR_CONTENT  # never FastAPI's default validation body
        if method == "head" or status in ("204", "304"):
            answer.pop("content", None)  # these answers have no body
    operation["responses"] = dict(sorted(responses.items()))


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
    )
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            _complete(operation, method)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    models: list[type[BaseModel]] = [ErrorOut, *_EXTRA_MODELS.values()]
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return document


def install(app: FastAPI) -> None:
    """Serve the completed document at the app's ``openapi_url`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
