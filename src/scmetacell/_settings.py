"""Package-wide settings (progress bars), kept deliberately small.

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
    """

    progress_bar: bool | None = None


settings = _Settings()
