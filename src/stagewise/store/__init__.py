"""Persistence: atomic local writes and locks, and fsspec locations (local, s3://, obs://)."""
