"""The plaintext scanner the secure zone's tests rely on finds what is there and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.plaintext_scan import find_windows, scan_paths


def test_a_planted_window_is_found_at_any_offset_and_alignment() -> None:
    secret = os.urandom(4096)
    for cut in (0, 1, 7, 8, 13, 4000):
        for pad in (0, 3, 8, 1001):
            # the bytes beside the window differ from the secret's own neighbours, so that the
            # stretch found is exactly the planted one (a random byte would match 1 time in 256)
            before = os.urandom(pad)[:-1] + bytes([secret[cut - 1] ^ 0xFF]) if pad else b""
            after = bytes([secret[cut + 32] ^ 0xFF]) + os.urandom(49)
            data = before + secret[cut : cut + 32] + after
            found = find_windows(data, secret)
            assert [(f.offset, f.length) for f in found] == [(pad, 32)], (cut, pad)


def test_a_stretch_one_byte_too_short_is_not_reported() -> None:
    secret = os.urandom(4096)
    data = os.urandom(100) + secret[500:531] + os.urandom(100)
    assert find_windows(data, secret) == []


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=64, max_size=600), st.integers(0, 500), st.binary(max_size=40))
def test_any_window_of_the_secret_is_found(secret: bytes, start: int, prefix: bytes) -> None:
    start = start % (len(secret) - 32)
    data = prefix + secret[start : start + 32]
    assert find_windows(data, secret), "a 32-byte window of the secret was not found"


def test_files_are_scanned_under_a_folder(tmp_path: Path) -> None:
    secret = os.urandom(10_000)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "clean.bin").write_bytes(os.urandom(20_000))
    (tmp_path / "a" / "leak.bin").write_bytes(os.urandom(7) + secret[2000:2100])
    found = scan_paths([tmp_path], secret)
    assert [Path(f.where).name for f in found] == ["leak.bin"]
