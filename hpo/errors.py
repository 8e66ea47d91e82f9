"""The one error type that means "the user's input is wrong"."""


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits with status 2."""
