"""Package-wide settings (progress bars, threads of the ``.mmm`` codec), kept deliberately small.

Verbosity follows :data:`scanpy.settings.verbosity`; nothing here changes global state at import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Settings:
    """Settings of scmetacell.

    Attributes
    ----------
    progress_bar
        Show ``tqdm`` progress bars on passes over cells. ``None`` (default) shows them when
        :data:`scanpy.settings.verbosity` is at least ``info`` (2); ``False`` hides them everywhere;
        every long-running function also takes ``progress=`` to override this per call.
    io_threads
        Threads used to decode and encode large ``.mmm`` reads and writes (:mod:`scmetacell.io`).
        ``None`` (default) uses every core the process may run on (``len(os.sched_getaffinity(0))``);
        ``1`` keeps the codec in the calling thread. The bytes written and the matrices read are the
        same for every value.
    """

    progress_bar: bool | None = None
    io_threads: int | None = None


settings = _Settings()
