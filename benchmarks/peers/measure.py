"""Run one method in a subprocess and measure it: wall time, CPU time, peak RSS, timeout.

Peak RSS and CPU time come from ``os.wait4`` on the runner, called by the small launcher ``_launch.py``
that forks it (Linux ``ru_maxrss``, KiB): the largest resident set of the runner or of any descendant it
waited for (maxima, not sums: forked data-loader workers are not added up). CPU time = user + system of the
runner and its waited-for descendants. Wall time is measured around the subprocess, so it includes
interpreter start and imports; each runner also reports the method's own wall time (``method_wall_s``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunResult:
    status: str  # "ok", "timeout", "failed (...)"
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int | None
    log: str


def run_measured(
    cmd: list[str],
    *,
    timeout_s: float,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> RunResult:
    """Run ``cmd`` (its own session, output to ``log_path``), kill its process group after ``timeout_s``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    usage_path = log_path.with_suffix(".usage.json")
    usage_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).with_name("_launch.py")), str(usage_path), "--", *cmd]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        timed_out = False
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(0.1)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    tail = log_path.read_text(errors="replace")[-4000:]
    if timed_out:
        state = f"timeout ({timeout_s:.0f} s)"
    elif proc.returncode == 0:
        state = "ok"
    else:
        last = [ln for ln in tail.strip().splitlines() if ln.strip()]
        state = f"failed: {last[-1][:160] if last else 'exit ' + str(proc.returncode)}"
    usage = json.loads(usage_path.read_text()) if usage_path.exists() else {}
    return RunResult(
        status=state,
        wall_s=wall,
        cpu_s=usage.get("cpu_s", float("nan")),
        peak_rss_mb=usage.get("maxrss_kb", float("nan")) / 1024.0,
        returncode=proc.returncode,
        log=tail,
    )
