"""One exception type for every problem the user can fix.

The CLI turns a SafeswapError into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class SafeswapError(Exception):
    """A problem with the user's input, reported as a single line."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep messages to one line: a multi-line error hides the cause.
        super().__init__(" ".join(str(message).split()))
