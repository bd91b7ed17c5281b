"""The data plane: the machinery that moves and checks bytes (upload state, small-file publishing,
copying between tiers, process pools, leases), behind the backends of :mod:`levere.storage`."""
