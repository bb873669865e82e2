"""``python -m peers`` (from ``benchmarks/``) or ``python -m benchmarks.peers`` (from the repository root)."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness imports ``peers.*``
    from peers.cli import main

    raise SystemExit(main())
