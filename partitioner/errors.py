"""Errors of partitioning that the user can fix (bad input files, options, schema)."""

from bigkg.errors import BigKGError


class PartitionError(BigKGError):
    """Bad input or options; the message names the file, line, column or value."""
