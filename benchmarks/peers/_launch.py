"""Launch a command and report its resource usage: ``python _launch.py USAGE.json -- CMD ...``.

A child's ``ru_maxrss`` on Linux starts from the RSS of the process it was forked from, so measuring a
runner forked straight from the (large) harness would add the harness's memory. This launcher is small:
the runner is forked from it, and ``os.wait4`` gives the runner's own peak RSS and CPU time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

out, sep, *cmd = sys.argv[1:]
assert sep == "--" and cmd, "usage: _launch.py USAGE.json -- CMD ..."
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
code = os.waitstatus_to_exitcode(status)
proc.returncode = code
with open(out, "w") as fh:
    json.dump(
        {"maxrss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime, "returncode": code}, fh
    )
sys.exit(code if code >= 0 else 128 - code)
