"""Errors a user can fix: bad input, bad config, a dataset or checkpoint of the wrong kind.

The ``bigkg`` command prints these as one clear line (exit status 2) instead of
a traceback; everything else is a bug and keeps its traceback.
"""


class BigKGError(Exception):
    """Base of all user-facing errors."""
