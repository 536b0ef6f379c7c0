"""The ``stagewise`` command line: one module per command group."""
