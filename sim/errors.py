"""The one base class for bad user input: the CLI turns it into a one-line error and exit code 2."""


class InputError(ValueError):
    """Input the user can fix: unknown names, out-of-range numbers, bad files or paths."""
