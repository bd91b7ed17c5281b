"""The client side of deliveries: scanning a run folder, reading its checksum file, and moving bytes.

Everything here runs in the ``levere`` command-line client and speaks to the service over HTTP only.
The engines report progress through a small callback interface (:class:`~.progress.Reporter`);
the Rich progress bars that implement it live in :mod:`levere.cli.transfer`.
"""
