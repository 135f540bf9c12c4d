"""The base class of errors a user can act on; the CLI prints them as one line, without a traceback."""


class ShopmindError(Exception):
    """An error caused by input, data or environment, with a message that says what to do."""
