"""The standard analysis in the secure zone: which files of a delivery it reads, and where its
reports are kept.

The reports are files of the delivery they describe, under :data:`REPORT_FOLDER`, so they are
encrypted, listed, released and destroyed with it. Whether a file is FASTQ is told by its name
here (the analysis then reads its content: gzip or plain is told by the bytes, never the name).
"""

from __future__ import annotations

#: the folder of a delivery that holds levere's analysis reports (no uploaded file goes there)
REPORT_FOLDER = "levere-qc"
#: the delivery's JSON summary, every FASTQ file's figures (or why it could not be read) in one
SUMMARY_PATH = f"{REPORT_FOLDER}/summary.json"
#: the schema named in the delivery's summary
SUMMARY_SCHEMA = "levere.qc.delivery/1"

FASTQ_SUFFIXES = (".fastq", ".fq", ".fastq.gz", ".fq.gz")
#: a file uploaded already in Crypt4GH may keep the suffix ``crypt4gh encrypt`` users give it
CRYPT4GH_SUFFIX = ".c4gh"


def is_report(path: str) -> bool:
    """Whether ``path`` is one of levere's reports (under :data:`REPORT_FOLDER`)."""
    return path == REPORT_FOLDER or path.startswith(f"{REPORT_FOLDER}/")


def is_fastq(path: str) -> bool:
    """Whether the standard analysis reads ``path``: a FASTQ name, plain or gzip, optionally
    with ``.c4gh`` after it; never a report."""
    if is_report(path):
        return False
    name = path.lower()
    name = name.removesuffix(CRYPT4GH_SUFFIX)
    return name.endswith(FASTQ_SUFFIXES)


def page_path(path: str) -> str:
    """Where the HTML page of the FASTQ file ``path`` is kept."""
    return f"{REPORT_FOLDER}/{path}.html"
