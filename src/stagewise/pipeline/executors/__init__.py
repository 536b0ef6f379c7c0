"""Where tasks run: ``local`` (worker processes on this machine) and ``ray``."""
