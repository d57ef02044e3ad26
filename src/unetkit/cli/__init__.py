"""The ``unetkit`` command line."""
