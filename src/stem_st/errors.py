"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class StemError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`StemError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise StemError(message)
