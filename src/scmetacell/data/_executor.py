"""Where passes over the cells run: in this process, or as tasks on a ``dask.distributed`` cluster.

A pass over the cells is written as a function of one chunk, ``fn(start, stop, **shared) -> part``,
and a reduction of the parts *in chunk order*. :class:`ChunkExecutor` runs the function on every chunk
and yields the parts in order, either here (one chunk after the other) or, given a
:class:`distributed.Client`, as one task per chunk on the cluster's workers. The shared objects (the
cell source, the normaliser, the model) are sent to the workers once (``client.scatter``); sources on
disk travel as their paths and are reopened by the workers (a ``.mmm`` file or collection, a backed
``.h5ad``), in-memory data travel whole. At most ``2 × workers`` tasks are in flight, so neither the
workers nor this process hold more than a few chunks' results at a time.

Because each chunk is computed by the same function on the same rows and the parts are reduced in the
same order, a pass gives the same numbers here and on a cluster.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .._memory import trim_heap
from .._progress import progress_bar


def _is_plain(value: Any) -> bool:
    """Small values passed to every task as they are (not scattered)."""
    return value is None or isinstance(value, (str, bytes, int, float, bool))


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of consecutive chunks of ``chunk_size`` rows covering ``n`` rows."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def check_client(client: Any) -> Any:
    """Validate the ``client`` argument of the public functions (``None`` or a dask ``Client``)."""
    if client is None:
        return None
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - distributed is an optional dependency
        raise ImportError(
            "client: dask.distributed is not installed; pip install 'scmetacell[dask]'."
        ) from err
    if not isinstance(client, Client):
        raise TypeError(f"client: a distributed.Client expected, got {type(client).__name__}.")
    if client.status not in ("running", "connecting"):
        raise ValueError(f"client: the dask client is {client.status!r}, not running.")
    return client


class ChunkExecutor:
    """Run a per-chunk function over all cells, here or on a dask cluster; parts come back in order.

    Parameters
    ----------
    client
        ``None``: run here. A :class:`distributed.Client`: one task per chunk on its workers.
    """

    def __init__(self, client: Any = None):
        self.client = check_client(client)

    @property
    def distributed(self) -> bool:
        """Whether the passes run on a dask cluster."""
        return self.client is not None

    def map(
        self,
        fn: Callable[..., Any],
        bounds: list[tuple[int, int]],
        *,
        shared: dict[str, Any] | None = None,
        per_chunk: Callable[[int, int], dict[str, Any]] | None = None,
        progress: bool | None = None,
        desc: str = "cells",
    ) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(start, stop, fn(start, stop, **shared, **per_chunk(start, stop)))`` in chunk order.

        ``shared`` objects are sent to the workers once; ``per_chunk`` gives small per-chunk arguments
        (e.g. the chunk's labels).
        """
        shared = dict(shared or {})
        total = bounds[-1][1] - bounds[0][0] if bounds else 0
        with progress_bar(total=total, desc=desc, progress=progress) as bar:
            if self.client is None:
                for s, e in bounds:
                    extra = per_chunk(s, e) if per_chunk is not None else {}
                    yield s, e, fn(s, e, **shared, **extra)
                    bar.update(e - s)
                    trim_heap()
                return
            client = self.client
            remote = {
                k: v if _is_plain(v) else client.scatter(v, broadcast=True, hash=False)
                for k, v in shared.items()
            }
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
            window = 2 * n_workers
            pending: deque = deque()
            todo = iter(bounds)
            try:
                for s, e in todo:
                    extra = per_chunk(s, e) if per_chunk is not None else {}
                    pending.append((s, e, client.submit(fn, s, e, pure=False, **remote, **extra)))
                    if len(pending) >= window:
                        break
                while pending:
                    s, e, fut = pending.popleft()
                    part = fut.result()
                    fut.release()
                    nxt = next(todo, None)
                    if nxt is not None:
                        extra = per_chunk(*nxt) if per_chunk is not None else {}
                        pending.append((*nxt, client.submit(fn, *nxt, pure=False, **remote, **extra)))
                    yield s, e, part
                    del part
                    bar.update(e - s)
                    trim_heap()
            finally:
                for *_, fut in pending:
                    fut.cancel()
                for k, fut in remote.items():
                    if not _is_plain(shared[k]):
                        fut.release()
