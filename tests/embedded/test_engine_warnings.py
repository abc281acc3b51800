"""The CPU mode silences exactly verl's five "engine is not available" warnings, in every process."""

from __future__ import annotations

import os
import subprocess
import sys

from verl_epo.embedded.engine_warnings import UNAVAILABLE_ENGINES

# imports verl's engines, then starts a child that does the same (as Ray workers and vLLM's engine
# processes do) and warns with an unrelated message, which must still show
SCRIPT = """
import subprocess, sys, warnings
import verl.workers.engine
child = "import warnings; import verl.workers.engine; warnings.warn('megatron-free warning')"
sys.stderr.write(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stderr)
"""


def stderr_of(cpu_mode: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "VERL_EPO_CPU")}
    if cpu_mode:
        env["VERL_EPO_CPU"] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_cpu_mode_silences_the_five_engine_warnings_in_children_too():
    quiet, loud = stderr_of(cpu_mode=True), stderr_of(cpu_mode=False)
    assert "megatron-free warning" in quiet  # other warnings still show, in the child too
    for name in UNAVAILABLE_ENGINES:
        assert loud.count(f"{name} engine is not available") >= 2  # parent and child, outside CPU mode
        assert f"{name} engine is not available" not in quiet
