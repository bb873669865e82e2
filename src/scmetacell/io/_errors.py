"""Errors raised by :mod:`scmetacell.io`.

Every problem found in a ``.mmm`` file is a :class:`MMMFormatError` (a :class:`ValueError`), with a
subclass per kind of problem. The message names the file, the problem and the byte offset where it
was found; the offset is also available as :attr:`MMMFormatError.offset`.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "MMMCollectionError",
    "MMMFormatError",
    "MMMGeneIndexError",
    "MMMIndexError",
    "MMMMagicError",
    "MMMPaddingError",
    "MMMTruncatedError",
    "MMMValueError",
    "MMMWriteError",
]


class MMMFormatError(ValueError):
    """A malformed ``.mmm`` file (base class of the specific format errors).

    Parameters
    ----------
    problem
        What is wrong, in words.
    offset
        The byte offset in the file where the problem was found (``None`` when not about one byte).
    path
        The file.
    """

    def __init__(self, problem: str, offset: int | None = None, path: str | PathLike | None = None):
        self.problem = problem
        self.offset = offset
        self.path = None if path is None else str(path)
        where = "" if self.path is None else f"{self.path}: "
        at = "" if offset is None else f" (at byte offset {offset})"
        super().__init__(f"{where}malformed .mmm file: {problem}{at}.")

    def __reduce__(self):
        return (type(self), (self.problem, self.offset, self.path))


class MMMMagicError(MMMFormatError):
    """The file does not start with the 48-byte ``.mmm`` magic string."""


class MMMTruncatedError(MMMFormatError):
    """The file is shorter than its header requires (truncated, or a corrupted count)."""


class MMMIndexError(MMMFormatError):
    """The offsets index is inconsistent: not monotonic, odd-length streams, offsets past the data."""


class MMMPaddingError(MMMFormatError):
    """The padding bytes between the data and the index are not zero."""


class MMMGeneIndexError(MMMFormatError):
    """A pair stream moves the running gene index to ``genes_count`` or beyond."""


class MMMValueError(MMMFormatError):
    """A decoded value does not fit the decoder's integer type."""


class MMMCollectionError(MMMFormatError):
    """A sharded ``.mmm`` collection directory is inconsistent (metadata vs shards)."""


class MMMWriteError(ValueError):
    """The data cannot be written as ``.mmm`` (negative, non-integer, NaN or too-large values, sizes)."""
