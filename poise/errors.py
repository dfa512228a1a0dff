"""The one exception type that reaches users as a message instead of a traceback."""


class PoiseError(Exception):
    """A problem the user can fix: the message names what was wrong and how to fix it.

    The CLI prints it as ``poise: error: <message>`` and exits with status 1.
    """
