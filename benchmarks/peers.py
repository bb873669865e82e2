"""Benchmarks against the peers: ``python benchmarks/peers.py [setup] [--quick] [--scaling] ...``.

See ``docs/benchmarks.md`` and ``python benchmarks/peers.py --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers.cli import main  # the package ``benchmarks/peers/`` (a package wins over this module)

    raise SystemExit(main())
