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
COUNT_MISMATCH = 3  # decode_block found more entries than counted (cannot happen; guards the output)
# encode status codes
UNSORTED = 1
# a run of at most this many pairs sums to at most INT32_MAX: only longer rows need the overflow check
SAFE_PAIRS = INT32_MAX // 255


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


# The kernels below loop over zero-based slices (``p = buf[a:b]; for i in range(p.size)``): indices
# known to be non-negative need no wraparound check, so LLVM keeps the loops tight (and vectorizes the
# counting ones), about 1.3-4x faster than ``for i in range(a, b)`` over the whole buffer.


@njit(cache=True, nogil=True)
def _count_row_exact(w):  # pragma: no cover - compiled
    """Count the entries of a row given as its pairs ``w`` (16-bit words): its runs with a non-zero sum."""
    c = 0
    nonzero = w.size > 0 and w[0] > 0xFF
    for i in range(1, w.size):
        if (w[i] & 0xFF) != 0:
            c += nonzero
            nonzero = False
        nonzero |= w[i] > 0xFF
    return c + nonzero


@njit(cache=True, nogil=True)
def _count_fast(w):  # pragma: no cover - compiled
    """Count pairs with a delta and a value in ``w`` (``w[0]``: with a value), and detect odd runs.

    Returns ``(count, odd)``; ``odd``: some delta-0 pair with a value follows a zero-valued pair.
    """
    cur = w[1:]
    prv = w[:-1]
    c = np.int64(w[0] > 0xFF)
    odd = False
    for i in range(cur.size):
        x = cur[i]
        c += ((x & 0xFF) != 0) & (x > 0xFF)
        odd |= ((x & 0xFF) == 0) & (x > 0xFF) & (prv[i] <= 0xFF)
    return c, odd


@njit(cache=True, nogil=True)
def count_entries(words, starts, stops, r0, r1):  # pragma: no cover - compiled
    """Count the CSR entries that rows ``r0 <= r < r1`` decode to (no validation).

    ``words`` is the file as little-endian 16-bit words (one per pair: delta in the low byte, value in
    the high byte); ``starts`` / ``stops`` are byte offsets. A row's entries are its runs (its first
    pair, or a pair with a non-zero delta, and the delta-0 pairs after it) with a non-zero sum. In a
    canonical stream that is the number of pairs with a non-zero delta and a non-zero value (plus the
    first pair when its value is non-zero), counted without a dependency between pairs; a row where a
    zero-valued pair is followed by a delta-0 pair with a value (a run whose first value is 0, which a
    canonical encoder never writes) is counted run by run instead.
    """
    total = 0
    for r in range(r0, r1):
        w = words[starts[r] >> 1 : stops[r] >> 1]
        if w.size == 0:
            continue
        c, odd = _count_fast(w)
        total += _count_row_exact(w) if odd else c
    return total


@njit(cache=True, nogil=True)
def _first_bad_pair(buf, a, b, genes_count):  # pragma: no cover - compiled
    """Find the first bad pair of the row whose pairs are ``a <= i < b``: ``(status, byte position)``.

    A bad pair moves the gene index to ``genes_count`` or beyond, or brings its run's sum above
    INT32_MAX; ``(OK, -1)`` when there is none.
    """
    g = 0
    acc = 0
    for i in range(a, b):
        d = buf[2 * i]
        if d != 0:
            acc = 0
            g += d
        if g >= genes_count:
            return GENE_OUT_OF_RANGE, 2 * i
        acc += buf[2 * i + 1]
        if acc > INT32_MAX:
            return VALUE_OVERFLOW, 2 * i
    return OK, -1


@njit(cache=True, nogil=True)
def decode_block(  # pragma: no cover - compiled
    buf, starts, stops, r0, r1, genes_count, indptr, indices, data, base, limit
):
    """Decode rows ``r0 <= r < r1`` (streams ``buf[starts[r]:stops[r]]``) into CSR entries from ``base``.

    Writes ``indices`` / ``data`` at ``base, base + 1, …`` (never at or past ``limit``) and
    ``indptr[r + 1]`` (absolute entry positions); repeated genes are merged, zero sums dropped.
    Returns ``(status, row, byte_position, n)``: ``status != OK`` marks the first bad pair of the
    range (a gene index at or past ``genes_count``, a value above INT32_MAX) and ``n`` is the position
    after the last entry written.
    """
    n = base
    for r in range(r0, r1):
        a = starts[r] >> 1
        b = stops[r] >> 1
        if b - a > SAFE_PAIRS:  # a run this long could exceed int32: check every pair first
            status, pos = _first_bad_pair(buf, a, b, genes_count)
            if status != OK:
                return status, r, pos, n
        p = buf[2 * a : 2 * b]
        g = 0
        acc = 0
        if n + (b - a) <= limit:  # room for one entry per pair: no check per entry
            for i in range(0, p.size, 2):
                d = p[i]
                if d != 0:
                    if acc != 0:
                        indices[n] = g
                        data[n] = acc
                        n += 1
                    acc = 0
                    g += d
                acc += p[i + 1]
        else:
            for i in range(0, p.size, 2):
                d = p[i]
                if d != 0:
                    if acc != 0:
                        if n >= limit:
                            return COUNT_MISMATCH, r, 2 * a + i, n
                        indices[n] = g
                        data[n] = acc
                        n += 1
                    acc = 0
                    g += d
                acc += p[i + 1]
        if a < b and g >= genes_count:  # the gene index only grows: its last value tells
            status, pos = _first_bad_pair(buf, a, b, genes_count)
            return status, r, pos, n
        if acc != 0:
            if n >= limit:
                return COUNT_MISMATCH, r, 2 * b, n
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
        ind = indices[indptr[r] : indptr[r + 1]]
        val = data[indptr[r] : indptr[r + 1]]
        for j in range(ind.size):
            g = np.int64(ind[j])
            if g <= prev:
                return UNSORTED, r
            prev = g
            v = np.int64(val[j])
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
        ind = indices[indptr[r] : indptr[r + 1]]
        val = data[indptr[r] : indptr[r + 1]]
        for j in range(ind.size):
            v = np.int64(val[j])
            if v == 0:
                continue
            g = np.int64(ind[j])
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
        ind = indices[indptr[r] : indptr[r + 1]]
        val = data[indptr[r] : indptr[r + 1]]
        for j in range(ind.size):
            g = np.int64(ind[j])
            if g <= prev:
                return UNSORTED, r, begin
            prev = g
            v = np.int64(val[j])
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
