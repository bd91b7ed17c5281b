"""The standard analysis of sequencing reads (issue 16, point 4): quality figures for one FASTQ stream.

The caller hands over any readable binary stream (a local file, an object-store body, or a stream that
decrypts Crypt4GH while it is read) and gets back a :class:`QcReport`, which renders itself as a JSON
summary and as a self-contained HTML page, both as bytes, so that the caller stores them as it stores
everything else (encrypted, in the secure zone). Plaintext stays in memory: nothing here writes a file.

Records are parsed by dnaio (the FASTQ parser of cutadapt); the figures are computed with numpy over
batches of records. ``docs/qc.md`` documents every key of the JSON summary.
"""

from levere.qc.engine import analyse_fastq
from levere.qc.report import QcReport

__all__ = ["QcReport", "analyse_fastq"]
