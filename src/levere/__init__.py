"""levere: deliver sequencing data from a core facility into research projects' storage."""

__version__ = "0.1.0"
