"""Benchmarks against the peers: ``python benchmarks/run_peers.py [setup] [--quick] [--scaling] ...``.

The harness is the package ``benchmarks/peers/``; this script only puts ``benchmarks/`` on the path
and runs its command line (``python -m peers`` from ``benchmarks/`` does the same). See
``docs/benchmarks.md`` and ``python benchmarks/run_peers.py --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers.cli import main

    raise SystemExit(main())
