"""A plain ``pytest`` without the servers ``make test`` starts says what it left out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_without_s3_names_the_skipped_s3_tests_in_its_summary() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_TEST_S3_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/storage/test_take_back.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests skipped for want of a server" in done.stdout
    assert "3 tests skipped: they need a real S3 server" in done.stdout
