"""Guards against known-broken combinations in today's stack."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

_BAD_PYNNDESCENT = "0.7.0"


def check_pynndescent() -> str | None:
    """Return a message when the installed pynndescent breaks ``sc.pp.neighbors``, else ``None``.

    scanpy 1.11.5 with pynndescent 0.7.0 fails in ``sc.pp.neighbors`` from 8,192 cells on
    (``'csr_array' object has no attribute 'getnnz'``). ``pynndescent<0.7`` works.
    """
    try:
        v = version("pynndescent")
    except PackageNotFoundError:
        return None
    if v == _BAD_PYNNDESCENT:
        return (
            f"pynndescent {v} breaks scanpy's neighbors from 8,192 cells on "
            "(\"'csr_array' object has no attribute 'getnnz'\"); install 'pynndescent<0.7'."
        )
    return None
