"""The ``kiln`` command: argv -> options -> driver, with no logic of its own."""
