"""The domain rules on their own: the application state machine, form validation, sizes, paths, roles."""

from __future__ import annotations

import unicodedata
from dataclasses import fields, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levere.domain.applications import (
    EDITABLE,
    REQUIRED_TEXT,
    ApplicationForm,
    ApplicationState,
    RequestedMember,
    check_complete,
    check_draft,
    transition,
)
from levere.domain.errors import AccessDenied, InvalidPath, InvalidTransition, ValidationFailed
from levere.domain.paths import MAX_NAME_BYTES, check_name, check_relative_path
from levere.domain.roles import PERMISSIONS, Action, Actor, ProjectRole, Subject, UserKind, allowed, require
from levere.domain.units import MAX_SIZE, MiB, format_size, parse_size

S = ApplicationState
#: the legal moves, written out here independently of the code's table
LEGAL = {
    (S.DRAFT, S.SUBMITTED),
    (S.SUBMITTED, S.APPROVED),
    (S.SUBMITTED, S.REJECTED),
    (S.SUBMITTED, S.CHANGES_REQUESTED),
    (S.CHANGES_REQUESTED, S.SUBMITTED),
    (S.DRAFT, S.WITHDRAWN),
    (S.SUBMITTED, S.WITHDRAWN),
    (S.CHANGES_REQUESTED, S.WITHDRAWN),
}
#: each target as the refusal words it ("... cannot be <step>")
STEP_WORDS = {
    S.DRAFT: "made a draft again",
    S.SUBMITTED: "submitted",
    S.CHANGES_REQUESTED: "sent back for changes",
    S.APPROVED: "approved",
    S.REJECTED: "rejected",
    S.WITHDRAWN: "withdrawn",
}


# --- the application state machine -------------------------------------------------------------


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_transition_table(current: ApplicationState, target: ApplicationState) -> None:
    if (current, target) in LEGAL:
        assert transition(current, target) is target
        return
    with pytest.raises(InvalidTransition) as caught:
        transition(current, target, "application 7")
    message = str(caught.value)
    # the message says in plain words what the application is, and what cannot happen to it
    if current is target:
        assert message == f"application 7 is already {current.value.replace('_', ' ')}"
    else:
        assert (
            message
            == f"application 7 is {current.value.replace('_', ' ')} and cannot be {STEP_WORDS[target]}"
        )
    assert caught.value.details == {"current": current.value, "target": target.value}
    assert caught.value.http_status == 409


def test_only_drafts_and_sent_back_applications_are_editable() -> None:
    assert frozenset({S.DRAFT, S.CHANGES_REQUESTED}) == EDITABLE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(S)), max_size=12))
def test_random_transition_sequences_follow_the_table(targets: list[ApplicationState]) -> None:
    state = S.DRAFT
    decided = False
    for target in targets:
        if (state, target) in LEGAL:
            state = transition(state, target)
        else:
            before = state
            with pytest.raises(InvalidTransition):
                transition(state, target)
            assert state is before  # a refused transition changes nothing
        if decided:
            # approved and rejected are final: nothing ever moves them again
            assert state in (S.APPROVED, S.REJECTED)
        decided = state in (S.APPROVED, S.REJECTED)


# --- validation ------------------------------------------------------------------------------


def complete() -> ApplicationForm:
    return ApplicationForm(
        title="Cod genomes",
        pi_email="pi@uni.example.org",
        data_ownership="University of Oslo",
        funding_source="RCN",
        grant_id="RCN-1",
        description="Resequencing",
        facility="seq-a",
        quota_area_bytes=10,
        quota_longterm_bytes=20,
        members=[RequestedMember("m@uni.example.org", ProjectRole.MEMBER)],
    )


def test_a_complete_form_passes() -> None:
    check_complete(complete())
    check_draft(complete())
    check_draft(ApplicationForm())  # an empty draft is a valid draft


@pytest.mark.parametrize("name", sorted(REQUIRED_TEXT))
def test_each_missing_required_field_is_named(name: str) -> None:
    form = replace(complete(), **{name: "  "})
    with pytest.raises(ValidationFailed) as caught:
        check_complete(form)
    assert set(caught.value.fields) == {name}
    assert "is required" in caught.value.fields[name]
    assert name in str(caught.value)


def test_an_empty_form_names_every_required_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_complete(ApplicationForm())
    assert set(caught.value.fields) == set(REQUIRED_TEXT) | {"quota_area_bytes", "quota_longterm_bytes"}


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"pi_email": "not-an-email"}, "pi_email", "not an e-mail address"),
        ({"pi_email": "a@" + "b" * 320 + ".org"}, "pi_email", "at most 320"),
        ({"title": "t" * 201}, "title", "at most 200 characters"),
        ({"description": "d" * 10_001}, "description", "at most 10000 characters"),
        ({"quota_area_bytes": -1}, "quota_area_bytes", "negative"),
        ({"quota_longterm_bytes": 0}, "quota_longterm_bytes", "long-term"),
        ({"sensitive": True, "secure_project_id": "tsd-1"}, "secure_project_id", "p1234"),
        ({"secure_project_id": "p1234"}, "secure_project_id", "only for sensitive data"),
        ({"members": [RequestedMember("nobody", ProjectRole.VIEWER)]}, "members[0].email", "not an e-mail"),
        (
            {
                "members": [
                    RequestedMember("x@uni.example.org", ProjectRole.VIEWER),
                    RequestedMember("X@uni.example.org", ProjectRole.ADMIN),
                ]
            },
            "members[1].email",
            "listed twice",
        ),
    ],
)
def test_bad_values_are_named_with_their_reason(changes: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_complete(replace(complete(), **changes))  # type: ignore[arg-type]
    assert field in caught.value.fields, caught.value.fields
    assert reason in caught.value.fields[field]


def test_a_secure_project_id_is_accepted_for_sensitive_data() -> None:
    check_complete(replace(complete(), sensitive=True, secure_project_id="p1234"))


FORM_FIELDS = {f.name for f in fields(ApplicationForm)}
texts = st.text(max_size=30) | st.sampled_from(["", "pi@uni.example.org", "x" * 250])


@settings(max_examples=200, deadline=None)
@given(
    title=texts,
    pi_email=texts,
    data_ownership=texts,
    description=texts,
    quota=st.integers(-5, 5),
    secure=st.sampled_from(["", "p1", "p1234567", "x"]),
    sensitive=st.booleans(),
    member_emails=st.lists(texts, max_size=3),
)
def test_validation_only_ever_names_real_fields(
    title: str,
    pi_email: str,
    data_ownership: str,
    description: str,
    quota: int,
    secure: str,
    sensitive: bool,
    member_emails: list[str],
) -> None:
    form = replace(
        complete(),
        title=title,
        pi_email=pi_email,
        data_ownership=data_ownership,
        description=description,
        quota_area_bytes=quota,
        secure_project_id=secure,
        sensitive=sensitive,
        members=[RequestedMember(e, ProjectRole.MEMBER) for e in member_emails],
    )
    try:
        check_complete(form)
    except ValidationFailed as exc:
        assert exc.fields
        for name, reason in exc.fields.items():
            assert name.split("[")[0] in FORM_FIELDS, name
            assert reason and "\n" not in reason
    else:
        # a sensitive project has no working area, so its form needs no area quota
        assert form.title.strip() and (form.sensitive or form.quota_area_bytes > 0)


# --- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("50B", 50),
        ("500G", 500 * 1024**3),
        ("500 GB", 500 * 1000**3),
        ("2TiB", 2 * 1024**4),
        ("1.5 TiB", 3 * 1024**4 // 2),
        (" 10k ", 10 * 1024),
        ("3 MB", 3_000_000),
        ("1P", 1024**5),
        ("9007199254740993", 9007199254740993),  # exact: no detour through float
        (123, 123),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "lots", "5 parsecs", "-5G", "1e9", "G", "1..5G", "9" * 30, True, "50", "1.5B", "0.5"]
)
def test_parse_size_refuses_with_the_field_name(text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_size(text, field="quota_area_bytes")
    assert list(caught.value.fields) == ["quota_area_bytes"]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (500 * 1024**3, "500.0 GiB"),
        (2 * 1024**4, "2.0 TiB"),
        (3 * 1024**5, "3.0 PiB"),
    ],
)
def test_format_size(n: int | None, text: str) -> None:
    assert format_size(n) == text


@given(st.integers(0, 2**62))
def test_sizes_round_trip(n: int) -> None:
    assert parse_size(f"{n}B") == n
    if n == 0 or n >= MiB:
        assert parse_size(str(n)) == n
    # what people read parses back to within the rounding of one decimal
    back = parse_size(format_size(n).replace(" ", ""))
    assert abs(back - n) <= max(0.05 * n, 0.5) + 1


@given(st.integers(0, 2**40), st.sampled_from(["k", "KiB", "M", "MiB", "G", "T", "TiB", "P"]))
def test_binary_units_multiply_exactly(n: int, unit: str) -> None:
    factor = {"k": 1, "kib": 1, "m": 2, "mib": 2, "g": 3, "t": 4, "tib": 4, "p": 5}[unit.lower()]
    expected = n * 1024**factor
    if expected > MAX_SIZE:
        with pytest.raises(ValidationFailed):
            parse_size(f"{n}{unit}")
    else:
        assert parse_size(f"{n}{unit}") == expected


# --- relative paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "empty"),
        ("../etc/passwd", "'..'"),
        ("run/../../x", "'..'"),
        ("run/..", "'..'"),
        ("/etc/passwd", "absolute"),
        ("run/\x00file", "NUL or control"),
        ("run/file\n", "NUL or control"),
        ("run/\x1bfile", "NUL or control"),
        ("run/\x7f", "NUL or control"),
        ("run/\x85", "NUL or control"),
        ("run\\file", "backslash"),
        ("..\\..\\windows", "backslash"),
        ("run//file", "empty or '.'"),
        ("run/./file", "empty or '.'"),
        ("run/", "empty or '.'"),
        ("a" * 256, "longer than 255 bytes"),
        ("run/" + "é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
        ("/".join(["d" * 200] * 21), "longer than 4096 bytes"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(path: str, why: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        check_relative_path(path)
    assert why in str(caught.value)
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    "path",
    ["sample1_R1.fastq.gz", "run/lane 1/sample.bam", "a" * 255, "é" * 127, ".hidden/..dots../x..", "-n"],
)
def test_good_paths_pass(path: str) -> None:
    assert check_relative_path(path) == path


def test_paths_are_normalised_to_nfc() -> None:
    decomposed = "run/Cafe\u0301.fastq"
    assert check_relative_path(decomposed) == "run/Caf\u00e9.fastq"


def test_a_name_is_one_component() -> None:
    assert check_name("RUN_2024_01") == "RUN_2024_01"
    with pytest.raises(InvalidPath, match="must not contain '/'"):
        check_name("run/x", "delivery name")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_accepted_path_stays_inside_its_folder(path: str) -> None:
    try:
        checked = check_relative_path(path)
    except InvalidPath as exc:
        assert str(exc)
        return
    assert checked == unicodedata.normalize("NFC", path)
    assert not checked.startswith("/") and "\\" not in checked
    assert not any(unicodedata.category(c) == "Cc" for c in checked)
    for part in checked.split("/"):
        assert part not in ("", ".", "..")
        assert len(part.encode()) <= MAX_NAME_BYTES


safe_char = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\")
component = st.text(safe_char, min_size=1, max_size=40).filter(lambda s: s not in (".", ".."))


@settings(max_examples=300, deadline=None)
@given(st.lists(component, min_size=1, max_size=6))
def test_paths_of_ordinary_names_are_accepted(parts: list[str]) -> None:
    path = "/".join(parts)
    assert check_relative_path(path) == unicodedata.normalize("NFC", path)


# --- roles -----------------------------------------------------------------------------------


def test_the_permission_table_decides_every_action() -> None:
    assert set(PERMISSIONS) == set(Action)
    for actors in PERMISSIONS.values():
        assert actors and actors <= set(Actor)


def test_subjects_and_the_table() -> None:
    helpdesk = Subject(kind=UserKind.HELPDESK)
    staff = Subject(kind=UserKind.FACILITY)
    assigned = Subject(kind=UserKind.FACILITY, facility_assigned=True)
    viewer = Subject(kind=UserKind.USER, project_role=ProjectRole.VIEWER)
    pi = Subject(kind=UserKind.USER, is_pi=True)
    assert allowed(helpdesk, Action.APPLICATION_REVIEW) and not allowed(pi, Action.APPLICATION_REVIEW)
    assert allowed(assigned, Action.DELIVERY_UPLOAD) and not allowed(staff, Action.DELIVERY_UPLOAD)
    assert allowed(viewer, Action.DATA_READ) and not allowed(viewer, Action.MEMBER_MANAGE)
    assert allowed(pi, Action.APPLICATION_SUBMIT)
    assert not allowed(Subject(kind=UserKind.USER, is_author=True), Action.APPLICATION_SUBMIT)
    with pytest.raises(AccessDenied, match="not allowed to manage the members in project X") as caught:
        require(viewer, Action.MEMBER_MANAGE, "in project X")
    assert caught.value.code == "access_denied" and caught.value.http_status == 403


def test_every_action_has_words_for_its_error_message() -> None:
    from levere.domain.roles import DESCRIPTIONS, PERMISSIONS, Action

    assert set(DESCRIPTIONS) == set(Action) == set(PERMISSIONS)
