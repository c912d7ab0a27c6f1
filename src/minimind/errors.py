"""The one exception type the command line turns into a one-line message instead of a traceback."""


class MiniMindError(ValueError):
    """Bad input from the user: a file, a field or a value. The message names it."""
