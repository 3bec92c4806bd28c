"""HTTP layer of the service."""
