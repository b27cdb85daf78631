"""Errors a user can act on.

Every failure that comes from the user's input, model or output folder raises a subclass of
:class:`SegUncertaintyError` with a message written for a person; front ends print the message and
exit non-zero instead of showing a traceback.
"""


class SegUncertaintyError(Exception):
    """A failure with a message meant for the user."""


class InputError(SegUncertaintyError):
    """The input volume is missing, unreadable or not usable (2D, 4D, empty, NaN/Inf, ...)."""


class ModelError(SegUncertaintyError):
    """The model package is missing, malformed, corrupted or does not fit the input."""


class OutputError(SegUncertaintyError):
    """The output location cannot be written."""


class DataError(SegUncertaintyError):
    """A data set is missing or inconsistent (e.g. the LIDC cache was not prepared)."""


class Cancelled(SegUncertaintyError):
    """The user cancelled a long operation."""
