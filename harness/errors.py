"""User-facing errors: raised for bad input, printed as one line by the command-line entry points."""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, unreachable budget). One line, no traceback."""


class DatasetUnavailable(UserError):
    """A dataset is not on disk and cannot be fetched (offline); the message names the path and the fetch command."""


class BudgetNotMet(UserError):
    """A pruned model's measured MACs/params miss the budget target: never written as a result."""


class CorruptCheckpoint(Exception):
    """A checkpoint that fails to load or fails its checksum; callers ignore it and start over."""
