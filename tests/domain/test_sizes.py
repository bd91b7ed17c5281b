"""Sizes as people write them: the meanings of the suffixes, bare numbers, and errors that name the
flag or the file's key the user wrote (``levere apply``, ``applications approve``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from levere.context import Context
from levere.domain.errors import ValidationFailed
from levere.domain.units import MIN_BARE, parse_size
from tests.cli_live import Env, levere, make_env, one_line_error

SI = {"kB": 1, "MB": 2, "GB": 3, "TB": 4, "PB": 5}
IEC = {"KiB": 1, "MiB": 2, "GiB": 3, "TiB": 4, "PiB": 5}
LETTERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


@given(st.integers(0, 9000), st.sampled_from(sorted(SI)))
def test_si_suffixes_with_b_are_powers_of_1000(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * 1000 ** SI[unit]
    assert parse_size(f"{n} {unit.lower()}") == n * 1000 ** SI[unit]


@given(st.integers(0, 8000), st.sampled_from(sorted(IEC | LETTERS)))
def test_iec_suffixes_and_bare_letters_are_powers_of_1024(n: int, unit: str) -> None:
    power = (IEC | LETTERS)[unit]
    assert parse_size(f"{n}{unit}") == n * 1024**power


@given(st.integers(1, MIN_BARE - 1))
def test_a_bare_number_below_the_minimum_asks_for_a_unit(n: int) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_size(str(n), "--area-quota")
    assert caught.value.fields == {
        "--area-quota": f"'{n}' has no unit: did you mean {n}G? write {n}B for bytes"
    }
    assert parse_size(f"{n}B") == n  # "B" says bytes on purpose


@given(st.integers(MIN_BARE, 2**62))
def test_a_bare_number_from_the_minimum_is_bytes(n: int) -> None:
    assert parse_size(str(n)) == n


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50G", 50 * 2**30), ("50GiB", 50 * 2**30), ("50GB", 50 * 10**9), ("500M", 500 * 2**20),
     ("2T", 2 * 2**40), ("1.5T", 3 * 2**39), ("1.5TB", 1_500_000_000_000), ("50B", 50)],
)  # fmt: skip
def test_the_usual_forms(text: str, expected: int) -> None:
    assert parse_size(text) == expected


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def env(ctx: Context, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(ctx, tmp_path)


def test_apply_names_the_flag_and_the_file_key(env: Env, tmp_path: Path) -> None:
    line = one_line_error(levere(env.staff, "apply", "--title", "T", "--area-quota", "50"))
    assert "--area-quota: '50' has no unit: did you mean 50G? write 50B for bytes" in line
    assert "quota_area_bytes" not in line

    form = tmp_path / "application.toml"
    form.write_text('[application]\ntitle = "T"\nquota_longterm_bytes = 200\n')
    line = one_line_error(levere(env.staff, "apply", "--file", str(form)))
    assert "quota_longterm_bytes (in application.toml): '200' has no unit: did you mean 200G?" in line

    # errors the service finds are named as the user wrote them too
    form.write_text('[application]\ntitle = "T"\nquota_area_bytes = "-5G"\n')
    line = one_line_error(levere(env.staff, "apply", "--file", str(form)))
    assert "quota_area_bytes (in application.toml)" in line
    line = one_line_error(levere(env.staff, "apply", "--title", "x" * 300, "--area-quota", "1G"))
    assert "--title: " in line and "200 characters" in line


def test_apply_sends_the_standard_meanings(env: Env, tmp_path: Path) -> None:
    done = levere(
        env.staff, "--json", "apply", "--title", "Sizes", "--area-quota", "50GB", "--longterm-quota", "50B"
    )
    assert done.returncode == 0, done.stderr
    app = json.loads(done.stdout)
    assert (app["quota_area_bytes"], app["quota_longterm_bytes"]) == (50 * 10**9, 50)
    form = tmp_path / "application.yaml"
    form.write_text("title: From YAML\nquota_area_bytes: 50G\nquota_longterm_bytes: 2TiB\n")
    done = levere(env.staff, "--json", "apply", "--file", str(form))
    assert done.returncode == 0, done.stderr
    app = json.loads(done.stdout)
    assert (app["quota_area_bytes"], app["quota_longterm_bytes"]) == (50 * 2**30, 2 * 2**40)


def test_every_size_option_says_what_its_units_mean(env: Env) -> None:
    for command in (["apply"], ["applications", "approve"], ["deliver"], ["projects", "quota"]):
        shown = levere(env.staff, *command, "--help")
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert "powers of 1024" in text and "powers of 1000" in text, command


def test_approve_names_the_flag(env: Env) -> None:
    line = one_line_error(levere(env.staff, "applications", "approve", "1", "--area-quota", "20"))
    assert "--area-quota: '20' has no unit" in line
    line = one_line_error(levere(env.staff, "deliver", env.project, ".", "--chunk-size", "64"))
    assert "--chunk-size: '64' has no unit" in line
