"""The OpenAPI document is a contract: a real ``levere serve`` keeps it for every role, and a client
generated from it by a stock generator works.

schemathesis (a stock OpenAPI fuzzer) runs every operation of the served document with a token of
each role, and fails on any server error and on any answer the document does not describe: a status
it does not list, a body that does not match its schema, an undocumented content type or header. It
also sends what the document forbids (wrong types, unknown fields, a 0 for a boolean) and fails if the
server takes it, and methods a path does not serve (405 with ``Allow``).

One exclusion, for one reason: :data:`ENDS_THE_TOKEN` lists the operations that revoke the token the
run is using, after which every later request of that run would be a 401.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pyotp
import pytest

from levere.api.app import create_app
from levere.config import Settings, SmtpSettings
from levere.context import Context
from levere.jobs.queue import build_queue
from levere.services import accounts
from tests.conftest import Mailbox, free_port, fresh_database
from tests.deliveries_support import tar_of
from tests.helpers import auth, permission_world

ROOT = Path(__file__).resolve().parents[2]
#: the roles the fuzzer runs as: the helpdesk (two-factor sign-in set up), facility staff assigned to
#: the project, and the project's admin, member and viewer
ROLES = ("helpdesk", "facility_assigned", "admin", "member", "viewer")
#: operations that end the token under test (there is no sign-out route: revoking is signing out)
ENDS_THE_TOKEN = ("revoke_token",)
#: what breaks the contract: a server error, or an answer the document does not describe; input
#: the document forbids (a wrong type, an unknown field, a required header left out) that the server
#: takes anyway; a 405 without ``Allow``; an operation that declares the bearer scheme and answers
#: without a token. (``allow_header_conformance`` is left out: it compares ``Allow`` with one path
#: template, but ``/api/applications/queue`` is also served by ``PATCH /api/applications/{ref}``,
#: and ``Allow`` must name every method that a URL is served with.)
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
)
#: the statuses that count as refusing input the document forbids
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429"]
#: a few examples per operation keep the whole run at about a minute on two cores; the coverage
#: phase (boundary values and every kind of invalid input, deterministic, ~1,500 requests) runs
#: for the helpdesk, whose token reaches every operation, the random phase for every role
EXAMPLES_PER_OPERATION = 5
PHASES = {role: "fuzzing" for role in ROLES} | {"helpdesk": "coverage,fuzzing"}


@dataclass
class Served:
    url: str
    tokens: dict[str, str]
    project: str
    delivery: str  # an open delivery of ``project`` holding one file
    document: dict[str, Any]


def _server_env(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    return env | {
        "LEVERE_MODE": "development",
        "LEVERE_DATA_DIR": str(settings.data_dir),
        "LEVERE_DATABASE_URL": settings.resolved_database_url,
        "LEVERE_QUEUE_URL": "memory",
        "LEVERE_INGEST_PROCESSES": "1",
        "LEVERE_SMTP__ENABLED": "true",
        "LEVERE_SMTP__PORT": str(settings.smtp.port),
        "LEVERE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }


def _world(ctx: Context) -> dict[str, str]:
    """A token per role, the helpdesk's issued after two-factor enrolment."""
    world = permission_world(ctx)
    with ctx.tx() as session:
        helpdesk = session.merge(world.users["helpdesk"])
        secret = pyotp.parse_uri(accounts.totp_begin(session, helpdesk))
    with ctx.tx() as session:
        helpdesk = session.merge(world.users["helpdesk"])
        accounts.totp_confirm(ctx, session, helpdesk, secret.now(), world.tokens["helpdesk"])  # type: ignore[attr-defined]
        tokens = {role: world.tokens[role] for role in ROLES}
        tokens["helpdesk"] = accounts.issue_token(ctx, session, helpdesk, "contract").token
    return tokens | {"project": world.project}


@pytest.fixture(scope="module")
def served(
    template_db: str, tmp_path_factory: pytest.TempPathFactory, smtp_server: tuple[Mailbox, int]
) -> Iterator[Served]:
    """``levere serve`` in a process of its own, over a database holding a project with people of
    every role, an open delivery with a file."""
    folder = tmp_path_factory.mktemp("contract")
    with fresh_database(template_db, folder) as database_url:
        settings = Settings(
            mode="development",
            data_dir=folder / "data",
            database_url=database_url,
            smtp=SmtpSettings(host="127.0.0.1", port=smtp_server[1], enabled=True),
            queue_url="memory",
        )
        ctx = Context.build(settings)
        build_queue(ctx, immediate=True)
        try:
            tokens = _world(ctx)
        finally:
            ctx.close()
        project = tokens.pop("project")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "levere.cli.main", "serve", "--port", str(port), "--no-worker"],
            env=_server_env(settings, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, server)
            staff = auth(tokens["facility_assigned"])
            with httpx.Client(base_url=url, headers=staff, timeout=30) as http:
                assert (
                    http.post(f"/api/projects/{project}/deliveries", json={"name": "RUN1"}).status_code == 201
                )
                stored = http.post(
                    f"/api/projects/{project}/deliveries/RUN1/batch",
                    content=tar_of({"SampleSheet.csv": b"Lane,Sample\n1,S1\n"}),
                    headers={"Content-Type": "application/x-tar"},
                )
                assert stored.status_code == 200 and not stored.json()["failed"], stored.text
                document = http.get("/api/openapi.json").json()
            yield Served(url=url, tokens=tokens, project=project, delivery="RUN1", document=document)
        finally:
            server.kill()  # by its own PID; nothing of it needs to survive
            server.wait(timeout=30)


def _wait_until_up(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"levere serve exited: {server.stderr.read().decode() if server.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/api/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("levere serve did not come up")


# --- the document itself ------------------------------------------------------------------------


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_operation_has_a_summary_a_stable_id_and_levere_errors(ctx: Context) -> None:
    document = create_app(ctx, start_worker=False).openapi()
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids)), "operation ids are unique"
    for method, path, operation in _operations(document):
        where = f"{method.upper()} {path}"
        # a summary written for people, not FastAPI's title-cased function name ("Audit Anchor"),
        # and an id given in the decorator, not derived from the path ("..._api_audit_anchor_post")
        words = operation.get("summary", "").split()
        assert len(words) >= 3 and not all(w[0].isupper() for w in words), (where, words)
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", operation["operationId"]), where
        assert "_api_" not in operation["operationId"], where
        for status, answer in operation["responses"].items():
            if status[0] in "45" and method != "head":  # a HEAD answer has no body
                assert answer["content"] == {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
                }, (where, status)
        signed_in = bool(operation.get("security"))
        assert signed_in == ((method, path) not in PUBLIC), where
        if signed_in:
            assert operation["security"] == [{"bearer": []}], where
            assert {"401", "403"} <= set(operation["responses"]), where
        if operation.get("requestBody"):
            assert {"413", "422"} <= set(operation["responses"]), where
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "opaque levere token",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorOut"]["required"]) == {"error", "message", "details"}


#: operations anyone may call, without a token
PUBLIC = {
    ("get", "/api/health"),
    ("post", "/api/auth/login"),
    ("post", "/api/invitations/accept"),
    ("get", "/api/auth/providers"),
    ("post", "/api/auth/oidc/{provider}/browser"),
    ("post", "/api/auth/oidc/callback"),
    ("post", "/api/auth/oidc/{provider}/device"),
    ("post", "/api/auth/oidc/device/poll"),
    ("options", "/api/tus/"),
}


def test_the_document_names_content_types_headers_and_data_errors(ctx: Context) -> None:
    paths = create_app(ctx, start_worker=False).openapi()["paths"]
    data = paths["/api/projects/{identifier}/data/{delivery}/{path}"]
    assert set(data["get"]["responses"]["200"]["content"]) == {"application/octet-stream"}
    assert {"ETag", "Levere-Checksum"} <= set(data["get"]["responses"]["200"]["headers"])
    assert {"200", "206", "304", "404", "416"} <= set(data["get"]["responses"])
    assert "content" not in data["head"]["responses"]["200"]
    assert {"Range", "If-Range", "If-None-Match"} <= {p["name"] for p in data["get"]["parameters"]}
    manifest = paths["/api/projects/{identifier}/deliveries/{name}/manifest"]["get"]
    assert set(manifest["responses"]["200"]["content"]) == {"text/plain", "application/json"}
    batch = paths["/api/projects/{identifier}/deliveries/{name}/batch"]["post"]
    assert set(batch["requestBody"]["content"]) == {"application/x-tar"}
    assert {"413", "507"} <= set(batch["responses"])
    create, patch = paths["/api/tus/"]["post"], paths["/api/tus/{upload_id}"]["patch"]
    assert {"Tus-Resumable", "Upload-Length", "Upload-Metadata"} <= {p["name"] for p in create["parameters"]}
    assert {"Tus-Resumable", "Upload-Offset"} <= {p["name"] for p in patch["parameters"]}
    assert set(patch["requestBody"]["content"]) == {"application/offset+octet-stream"}
    assert {"Location", "Upload-Offset", "Tus-Resumable"} <= set(create["responses"]["201"]["headers"])
    assert {"409", "412", "460", "507"} <= set(patch["responses"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "t", "sensitive": 0}, "sensitive"),
        ({"title": "t", "sensitive": "yes"}, "sensitive"),
        ({"title": "t", "quota_area_bytes": 1.5}, "quota_area_bytes"),
        ({"title": "t", "quota_area_bytes": True}, "quota_area_bytes"),
        ({"title": "t", "surprise": 1}, "surprise"),
        ({"title": 5}, "title"),
    ],
)
def test_request_bodies_are_strict(client: Any, ctx: Context, body: dict[str, Any], field: str) -> None:
    world = permission_world(ctx)
    r = client.post("/api/applications", json=body, headers=world.headers("facility_assigned"))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_failed" and field in r.json()["details"]["fields"]
    # the same body with the field as the document says is taken
    good = {**body, field: {"sensitive": False, "quota_area_bytes": "2T", "title": "t"}.get(field)}
    if field == "surprise":
        good.pop("surprise")
    assert (
        client.post("/api/applications", json=good, headers=world.headers("facility_assigned")).status_code
        == 201
    )


# --- a generated client -------------------------------------------------------------------------

#: the generator maps levere's binary bodies to raw bytes (it knows application/octet-stream by name)
GENERATOR_CONFIG = """content_type_overrides:
  application/x-tar: application/octet-stream
  application/offset+octet-stream: application/octet-stream
"""


def test_a_generated_client_lists_projects_and_opens_a_delivery(served: Served, tmp_path: Path) -> None:
    (tmp_path / "openapi.json").write_text(json.dumps(served.document))
    (tmp_path / "generator.yaml").write_text(GENERATOR_CONFIG)
    # `make test` installs the generator in a virtualenv of its own (see the Makefile)
    bin_dir = ROOT / ".venv" / "tools" / "bin"
    if not (bin_dir / "openapi-python-client").exists():
        pytest.skip("the client generator is not installed: run `make test`, which installs it")
    generated = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"), "generate",
            "--path", str(tmp_path / "openapi.json"),
            "--output-path", str(tmp_path / "levere_client"),
            "--meta", "none",
            "--config", str(tmp_path / "generator.yaml"),
        ],
        capture_output=True, text=True, timeout=300,
        env=os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, "every operation was generated"
    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("levere_client")
        list_projects = importlib.import_module("levere_client.api.projects.list_projects")
        deliveries = "levere_client.api.deliveries."
        open_delivery = importlib.import_module(deliveries + "open_delivery")
        get_delivery = importlib.import_module(deliveries + "get_delivery")
        file_data = importlib.import_module(deliveries + "file_data")
        delivery_in = importlib.import_module("levere_client.models.delivery_in").DeliveryIn

        def client(role: str) -> Any:
            return client_module.AuthenticatedClient(
                base_url=served.url, token=served.tokens[role], raise_on_unexpected_status=True
            )

        with client("member") as member, client("facility_assigned") as staff:
            projects = list_projects.sync(client=member)
            assert [p.identifier for p in projects] == [served.project]
            assert projects[0].my_role == "member"
            opened = open_delivery.sync(
                identifier=served.project, client=staff, body=delivery_in(name="RUN2")
            )
            assert (opened.name, opened.state, opened.file_count) == ("RUN2", "open", 0)
            again = open_delivery.sync_detailed(
                identifier=served.project, client=staff, body=delivery_in(name="RUN2")
            )
            assert again.status_code == 409 and again.parsed.error == "already_exists"
            shown = get_delivery.sync(identifier=served.project, name=served.delivery, client=member)
            assert [f.path for f in shown.files] == ["SampleSheet.csv"]
            data = file_data.sync_detailed(
                identifier=served.project, delivery=served.delivery, path="SampleSheet.csv", client=member
            )
            assert data.status_code == 200 and data.content == b"Lane,Sample\n1,S1\n"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "levere_client" or m.startswith("levere_client.")]:
            del sys.modules[name]


# --- the live server, fuzzed --------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_keeps_the_document(served: Served, role: str, tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(_config(served, tmp_path)),
        "run",
        f"{served.url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {served.tokens[role]}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--phases",
        PHASES[role],
        "--seed",
        "14",
        "--workers",
        "1",
        "--no-shrink",
        "--continue-on-failure",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *[arg for operation in ENDS_THE_TOKEN for arg in ("--exclude-operation-id", operation)],
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=_st_env(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
    # the run tried every operation but the excluded ones
    tried = {case.get("name") for case in ElementTree.parse(report).getroot().iter("testcase")}
    expected = {
        f"{method.upper()} {path}"
        for method, path, operation in _operations(served.document)
        if operation["operationId"] not in ENDS_THE_TOKEN
    }
    assert tried == expected


def _st_env(tmp_path: Path) -> dict[str, str]:
    """schemathesis with levere's serializers for binary bodies, keeping nothing between runs."""
    root = str(Path(__file__).parents[2])
    return os.environ | {
        "HOME": str(tmp_path),
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }


def _config(served: Served, folder: Path) -> Path:
    """Real objects for the path parameters, so that requests reach past the 404s."""
    path = folder / "schemathesis.toml"
    path.write_text(
        "[parameters]\n"
        f'"path.identifier" = "{served.project}"\n'
        f'"path.delivery" = "{served.delivery}"\n'
        '"path.path" = "SampleSheet.csv"\n'
        # input the document forbids may also be refused for what it breaks: a tus version the
        # server does not speak (412), a body too large (413)
        "[checks.negative_data_rejection]\n"
        f"expected-statuses = {json.dumps(REJECTIONS)}\n"
        "[checks.missing_required_header]\n"
        f"expected-statuses = {json.dumps(REJECTIONS)}\n"
    )
    return path
