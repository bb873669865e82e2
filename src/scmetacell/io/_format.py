"""Constants and header / index validation of the ``.mmm`` format (spec §1), without numba."""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import numpy as np

from ._errors import MMMIndexError, MMMMagicError, MMMPaddingError, MMMTruncatedError

MAGIC = b"METACELL SPARSE MEMORY MAPPED MATRIX VERSION 0\x00\x00"
MAGIC_SIZE = 48
HEADER_SIZE = 56
#: u32 offsets: a file (data, padding and index) must stay below 4 GiB.
MAX_FILE_BYTES = 2**32 - 1
#: genes are decoded into int32 indices.
MAX_GENES = 2**31 - 1
#: beyond this many genes, names are not invented (a corrupted genes_count would allocate gigabytes).
MAX_NAMED_GENES = 2**22

_CONTAINER_MATRIX = re.compile(r"^(matrix|gp)\.[^/]+\.mmm$")


INDEX_CHECK_BLOCK = 1 << 20  # index entries validated at a time


def parse_header(buf: np.ndarray, path: str | PathLike) -> tuple[int, int, np.ndarray, int]:
    """Validate the header, the index and the padding of a whole ``.mmm`` file held in ``buf`` (uint8).

    Only the header and the index are touched (``O(profiles)``), never the pair streams. Sizes are
    checked against the file size before anything is allocated.

    Returns
    -------
    ``(profiles_count, genes_count, index, data_end)``: ``index`` holds ``P + 1`` absolute offsets (uint32;
    int64 only for relative offsets that overflow it), copied out of ``buf``.
    """
    size = int(buf.size)
    if size < MAGIC_SIZE:
        head = bytes(buf[:size])
        if head != MAGIC[:size]:
            raise MMMMagicError("wrong magic string", _first_diff(head, MAGIC), path)
        raise MMMTruncatedError(f"file of {size} bytes ends inside the 48-byte magic string", size, path)
    head = bytes(buf[:MAGIC_SIZE])
    if head != MAGIC:
        raise MMMMagicError(
            "wrong magic string (not a 'METACELL SPARSE MEMORY MAPPED MATRIX VERSION 0' file)",
            _first_diff(head, MAGIC),
            path,
        )
    if size < HEADER_SIZE + 4:
        raise MMMTruncatedError(
            f"file of {size} bytes is shorter than the 56-byte header plus one index entry", size, path
        )
    if size > MAX_FILE_BYTES + 4 * 2**32:
        raise MMMTruncatedError(f"file of {size} bytes is larger than the format can address", size, path)
    profiles = int(buf[48:52].view("<u4")[0])
    genes = int(buf[52:56].view("<u4")[0])
    index_bytes = 4 * (profiles + 1)
    if HEADER_SIZE + index_bytes > size:
        raise MMMTruncatedError(
            f"profiles_count {profiles} needs a {index_bytes}-byte index but the file has only "
            f"{size - HEADER_SIZE} bytes after the header (truncated file or corrupted count)",
            48,
            path,
        )
    if genes > MAX_GENES:
        raise MMMTruncatedError(f"genes_count {genes} exceeds the supported maximum {MAX_GENES}", 52, path)
    at = size - index_bytes  # A: first byte of the index
    if at % 4:
        raise MMMTruncatedError(
            f"index start {at} (file size - 4 * (profiles_count + 1)) is not 4-aligned "
            "(truncated file or corrupted profiles_count)",
            at,
            path,
        )
    raw = np.frombuffer(buf, dtype="<u4", count=profiles + 1, offset=at)
    first = int(raw[0])
    if first == 0:  # hypothetical relative offsets (spec §1): add the header size
        index = raw.astype(np.int64) + HEADER_SIZE
        if int(index[-1]) <= np.iinfo(np.uint32).max:
            index = index.astype(np.uint32)
    elif first != HEADER_SIZE:
        raise MMMIndexError(
            f"first index entry is {first}, expected {HEADER_SIZE} (or 0 if relative)", at, path
        )
    else:
        index = raw.astype(np.uint32)  # 4 bytes per profile, a copy (the file's pages can be released)
    for lo in range(0, profiles, INDEX_CHECK_BLOCK):  # checked in blocks: no per-profile temporaries
        hi = min(lo + INDEX_CHECK_BLOCK, profiles)
        steps = np.diff(index[lo : hi + 1].astype(np.int64))
        bad = np.flatnonzero(steps < 0)
        if bad.size:
            i = lo + int(bad[0]) + 1
            raise MMMIndexError(
                f"index not monotonic: entry {i} ({int(raw[i])}) is below entry {i - 1} ({int(raw[i - 1])})",
                at + 4 * i,
                path,
            )
        odd = np.flatnonzero(steps % 2)
        if odd.size:
            i = lo + int(odd[0])
            raise MMMIndexError(
                f"profile {i} has an odd-length pair stream ({int(steps[i - lo])} bytes)",
                at + 4 * (i + 1),
                path,
            )
    end = int(index[-1])
    if end > at:
        raise MMMIndexError(
            f"last index entry {int(raw[-1])} points past the end of the data area ({at})",
            at + 4 * profiles,
            path,
        )
    if at - end >= 4:
        raise MMMIndexError(
            f"last index entry {int(raw[-1])} leaves {at - end} bytes before the index "
            "(padding is 0..3 bytes)",
            at + 4 * profiles,
            path,
        )
    pad = np.flatnonzero(buf[end:at])
    if pad.size:
        raise MMMPaddingError("non-zero padding byte before the index", end + int(pad[0]), path)
    return profiles, genes, index, end


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def header_bytes(profiles: int, genes: int) -> bytes:
    """Return the 56-byte header."""
    return MAGIC + np.array([profiles, genes], dtype="<u4").tobytes()


def file_size(data_bytes: int, profiles: int) -> int:
    """Size of a file holding ``data_bytes`` of pair streams for ``profiles`` profiles."""
    return HEADER_SIZE + (-(-data_bytes // 4) * 4) + 4 * (profiles + 1)


def sidecar_dir(path: str | PathLike) -> Path | None:
    """Return the container directory holding the names of ``path`` (``matrix.*.mmm``, ``gp.*.mmm``)."""
    p = Path(path)
    if _CONTAINER_MATRIX.match(p.name):
        return p.parent
    return None


GENE_NAME_FILES = ("genes.name.txt", "g.name.txt")
CELL_NAME_FILES = ("profiles.barcode.txt", "p.barcode.txt", "profiles.name.txt", "p.name.txt")


def read_txt(path: Path) -> list[str]:
    """Read a ``tgutils`` string array: UTF-8, one value per line, each line ending with a newline."""
    text = path.read_text(encoding="utf-8")
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def sidecar_names(directory: Path | None, candidates: tuple[str, ...], count: int) -> list[str] | None:
    """Names from the first existing candidate file with ``count`` lines, else ``None``."""
    if directory is None:
        return None
    for name in candidates:
        f = directory / name
        if f.is_file():
            names = read_txt(f)
            if len(names) == count:
                return names
            from .. import _logging as logg

            logg.warning(f"{f}: {len(names)} names for {count} entries; using numbered names instead.")
            return None
    return None
