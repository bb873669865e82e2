"""Create the peers' own virtual environment (the peers are not dependencies of scmetacell).

Versions below are the ones this harness was run with. torch comes first, pinned to the CPU build
(``torch==2.13.0``; an unpinned torch pulls GBs of CUDA wheels). MetaQ-sc is installed with ``--no-deps``
(its pins are CUDA-era: torch 2.1.1, numpy 1.26, scanpy 1.9.6) plus the two small packages it really
imports. ``pynndescent`` 0.7.0 breaks ``sc.pp.neighbors`` (used by SEACells) from 8,192 cells on: excluded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".peers-venv"

TORCH = "torch==2.13.0"
PEERS = [
    "metacells==0.9.5",
    "SEACells==0.3.3",
    "pynndescent==0.6.0",
    "einops==0.8.2",
    "alive-progress==3.3.0",
]
METAQ = "MetaQ-sc==1.0.6"
PROBE = {
    "mc2": "import metacells",
    "seacells": "import sys, tqdm.std; sys.modules['tqdm.notebook'] = tqdm.std; import SEACells",
    "metaq": "import importlib.util as u; import einops, torch; assert u.find_spec('MetaQ')",
}


def python() -> Path:
    return VENV / "bin" / "python"


def _pip(*args: str) -> None:
    subprocess.run([str(python()), "-m", "pip", "install", "--disable-pip-version-check", *args], check=True)


def setup(force: bool = False) -> dict[str, str]:
    """Create/refresh the venv; return ``{peer: "ok" or why not}`` (also written to ``status.json``)."""
    if force or not python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    steps = [("torch", [TORCH]), ("peers", PEERS), ("metaq", ["--no-deps", METAQ])]
    errors = {}
    for name, args in steps:
        try:
            _pip(*args)
        except subprocess.CalledProcessError as err:
            errors[name] = f"pip install {' '.join(args)} failed ({err.returncode})"
    status = probe()
    for peer in status:
        if status[peer] != "ok" and errors:
            status[peer] += "; " + "; ".join(errors.values())
    (VENV / "status.json").write_text(json.dumps(status, indent=1))
    return status


def probe() -> dict[str, str]:
    """Whether each peer imports in the venv (``"ok"`` or the last error line)."""
    if not python().exists():
        return {peer: "not installed (run: python benchmarks/run_peers.py setup)" for peer in PROBE}
    out = {}
    for peer, code in PROBE.items():
        res = subprocess.run([str(python()), "-c", code], capture_output=True, text=True)
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        out[peer] = (
            "ok" if res.returncode == 0 else f"import failed: {lines[-1] if lines else res.returncode}"
        )
    return out


def versions() -> dict[str, str]:
    """Installed versions of the peers and their key dependencies."""
    if not python().exists():
        return {}
    code = (
        "import json\nfrom importlib.metadata import version as v\nout={}\n"
        "for p in ['metacells','SEACells','MetaQ-sc','torch','numpy','scanpy','anndata','scikit-learn']:\n"
        "    try: out[p]=v(p)\n    except Exception as e: out[p]='missing'\nprint(json.dumps(out))"
    )
    res = subprocess.run([str(python()), "-c", code], capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else {}
