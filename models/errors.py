"""The one exception type for bad input.

Every check on user-supplied data (files, arrays, options) raises
:class:`InputError` with a one-line message; the command line turns it into
``psm: error: <message>`` and exit code 2.
"""


class InputError(ValueError):
    """Bad input: a malformed file, an array of the wrong shape, a value out of range."""
