"""Sealing a shared disk's delivery with files uploaded as Crypt4GH (``.c4gh``, stored with their
plaintext's MD5): the run's checksum file's entry for the name without ``.c4gh`` is compared, an
entry naming the encrypted file itself is left unchecked and named apart. The whole journey through
the CLI and a live server: tests/secure/test_zone_cli_crypt4gh.py."""

from __future__ import annotations

from levere.services.sealing import _verify_against, for_encrypted


def test_sealing_compares_the_plaintext_entry_and_leaves_the_encrypted_one_unchecked() -> None:
    stored = {"x.fastq.gz.c4gh": "a" * 32, "a.bam.c4gh": "d" * 32, "y.bam": "c" * 32}
    listed = {"x.fastq.gz": "a" * 32, "a.bam.c4gh": "e" * 32, "y.bam": "c" * 32}
    applied, encrypted_only = for_encrypted(listed, stored, frozenset({"x.fastq.gz.c4gh", "a.bam.c4gh"}))
    assert applied == {"x.fastq.gz.c4gh": "a" * 32, "y.bam": "c" * 32}
    assert encrypted_only == ["a.bam.c4gh"]
    assert _verify_against(applied, [], stored, "md5sum.txt") == []
    wrong = for_encrypted({"x.fastq.gz": "f" * 32}, stored, frozenset({"x.fastq.gz.c4gh"}))[0]
    assert _verify_against(wrong, [], stored, "md5sum.txt") == [
        f"x.fastq.gz.c4gh: MD5 {'a' * 32} differs from {'f' * 32} in md5sum.txt"
    ]
    # a file uploaded as plaintext keeps its own entry, whatever its name
    assert for_encrypted(listed, stored, frozenset()) == (listed, [])
