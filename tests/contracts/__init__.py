"""One suite over every backend: executors (local, ray), databases (sqlite, postgresql)."""
