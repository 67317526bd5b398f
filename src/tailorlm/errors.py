"""The one exception type a user can cause.

Anything raised as `TailorError` is the user's to fix (a bad file, config value or name); its message
is one line that says what to do. The CLI prints it without a traceback and exits with status 2.
Everything else is a bug in tailorlm and keeps its traceback.
"""


class TailorError(Exception):
    """A problem with the user's input, with a message that says how to fix it."""
