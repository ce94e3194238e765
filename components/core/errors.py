"""The one exception type that means "the user can fix this"."""


class BertpipeError(Exception):
    """A problem with inputs, settings or services that the user can fix.

    The CLI prints it as a single line and exits with status 2; any other
    exception is a bug and keeps its traceback.
    """
