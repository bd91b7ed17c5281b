"""Moving bytes over HTTP: the tus 1.0 protocol, request bodies handed to worker threads in large
buffers, MD5 and SHA-256 computed in the same pass (with state that survives a restart), a
streaming tar reader for batches of small files, and byte ranges for downloads.

Nothing here touches the database; the use cases in :mod:`levere.services` drive it.
"""
