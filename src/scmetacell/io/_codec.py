"""Compiled encode / decode kernels of the ``.mmm`` pair streams (numba, compiled lazily and cached).

This module imports numba, so it is imported lazily (inside functions) by the rest of
:mod:`scmetacell.io`: ``import scmetacell`` never compiles anything.

Pair stream of one profile (spec §2): pairs ``(d, v)`` of unsigned bytes; ``g += d`` then
``profile[g] += v``; ``g`` starts at 0 for each profile. Canonical encoding (spec §3): ``(255, 0)`` gap
fillers while the gene gap is above 255, values split as 255s first then the remainder.
"""

from __future__ import annotations

import numpy as np
from numba import njit

INT32_MAX = 2**31 - 1

# decode status codes
OK = 0
GENE_OUT_OF_RANGE = 1
VALUE_OVERFLOW = 2
# encode status codes
UNSORTED = 1


@njit(cache=True, nogil=True)
def decode_rows(buf, starts, stops, genes_count, indptr, indices, data):  # pragma: no cover - compiled
    """Decode the streams ``buf[starts[r]:stops[r]]`` into CSR rows ``r`` (merging repeated genes).

    Returns ``(status, row, byte_position, nnz)``; ``status != 0`` marks the first bad pair.
    """
    n = 0
    indptr[0] = 0
    for r in range(starts.size):
        pos = starts[r]
        end = stops[r]
        g = 0
        acc = 0
        while pos < end:
            d = buf[pos]
            v = buf[pos + 1]
            if d != 0:
                if acc != 0:
                    indices[n] = g
                    data[n] = acc
                    n += 1
                    acc = 0
                g += d
            if g >= genes_count:
                return GENE_OUT_OF_RANGE, r, pos, n
            acc += v
            if acc > INT32_MAX:
                return VALUE_OVERFLOW, r, pos, n
            pos += 2
        if acc != 0:
            indices[n] = g
            data[n] = acc
            n += 1
        indptr[r + 1] = n
    return OK, -1, -1, n


@njit(cache=True, nogil=True)
def encode_lengths(indptr, indices, data, row_start, row_stop, lengths):  # pragma: no cover - compiled
    """Canonical stream length in bytes of each row ``row_start <= r < row_stop`` into ``lengths``.

    Zeros are skipped. Returns ``(status, row)``: ``UNSORTED`` when a row's gene indices are not
    strictly increasing (the caller then canonicalizes a copy and retries).
    """
    for r in range(row_start, row_stop):
        prev = -1
        last = 0
        pairs = 0
        for j in range(indptr[r], indptr[r + 1]):
            g = np.int64(indices[j])
            if g <= prev:
                return UNSORTED, r
            prev = g
            v = np.int64(data[j])
            if v == 0:
                continue
            gap = g - last
            last = g
            if gap > 255:
                pairs += (gap - 1) // 255
            if v > 255:
                pairs += (v + 254) // 255
            else:
                pairs += 1
        lengths[r - row_start] = 2 * pairs
    return OK, -1


@njit(cache=True, nogil=True)
def encode_rows(indptr, indices, data, row_start, row_stop, out):  # pragma: no cover - compiled
    """Write the canonical streams of rows ``row_start <= r < row_stop`` back to back into ``out``.

    ``out`` must have exactly the total of :func:`encode_lengths`. Returns the number of bytes written.
    """
    pos = 0
    for r in range(row_start, row_stop):
        prev = 0
        for j in range(indptr[r], indptr[r + 1]):
            v = np.int64(data[j])
            if v == 0:
                continue
            g = np.int64(indices[j])
            gap = g - prev
            while gap > 255:
                out[pos] = 255
                out[pos + 1] = 0
                pos += 2
                gap -= 255
            while v > 255:
                out[pos] = gap
                out[pos + 1] = 255
                pos += 2
                gap = 0
                v -= 255
            out[pos] = gap
            out[pos + 1] = v
            pos += 2
            prev = g
    return pos


FULL = 2


@njit(cache=True, nogil=True)
def encode_into(indptr, indices, data, row_start, row_stop, out, pos, lengths):  # pragma: no cover - compiled
    """Encode rows canonically into ``out[pos:]`` in one pass, recording row ``r``'s length in ``lengths[r]``.

    Stops before a row that does not fit ``out``. Returns ``(status, next_row, pos)``: ``FULL`` when
    ``out`` must grow (resume at ``next_row``), ``UNSORTED`` for a row with unsorted gene indices.
    """
    cap = out.size
    for r in range(row_start, row_stop):
        begin = pos
        prev = -1
        last = 0
        for j in range(indptr[r], indptr[r + 1]):
            g = np.int64(indices[j])
            if g <= prev:
                return UNSORTED, r, begin
            prev = g
            v = np.int64(data[j])
            if v == 0:
                continue
            gap = g - last
            last = g
            if gap <= 255 and v <= 255:
                if pos + 2 > cap:
                    return FULL, r, begin
                out[pos] = gap
                out[pos + 1] = v
                pos += 2
                continue
            need = 1
            if gap > 255:
                need += (gap - 1) // 255
            if v > 255:
                need += (v - 1) // 255
            if pos + 2 * need > cap:
                return FULL, r, begin
            while gap > 255:
                out[pos] = 255
                out[pos + 1] = 0
                pos += 2
                gap -= 255
            while v > 255:
                out[pos] = gap
                out[pos + 1] = 255
                pos += 2
                gap = 0
                v -= 255
            out[pos] = gap
            out[pos + 1] = v
            pos += 2
        lengths[r] = pos - begin
    return OK, row_stop, pos
