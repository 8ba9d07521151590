"""The one exception type users see. It lives in the runtime so the torch-free side can raise it too."""


class EdgeSDKError(Exception):
    """A user error: the message says what went wrong and what to do. The CLI prints it on one line, exit 2."""
