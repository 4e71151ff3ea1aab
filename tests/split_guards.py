"""A stand-in for ``splits.test`` that fails any read: the tests that prove a search never touches the test
split (tests/test_random_search.py, tests/test_crl.py)."""
from __future__ import annotations


class ForbiddenSplit:
    """Stands in for ``splits.test``: any use raises, and is recorded in case a caller swallows the error."""

    def __init__(self) -> None:
        object.__setattr__(self, "reads", [])

    def _read(self, what: str):
        self.reads.append(what)
        raise AssertionError(f"the test split was read ({what})")

    def __len__(self) -> int:
        return self._read("len")

    def __iter__(self):
        return self._read("iter")

    def __getitem__(self, i):
        return self._read("getitem")

    def __getitems__(self, idx):
        return self._read("getitems")

    def __getattr__(self, name: str):
        return self._read(f"attribute {name}")
