"""What the ``verl.plugins`` entry point sets up in every process: verl_epo's log lines reach stderr."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import logging
import verl_epo.plugin
logging.getLogger("verl_epo.trainer").info("restored entropy history from /x")
"""


@pytest.mark.parametrize(("level", "shown"), [("INFO", True), ("WARNING", False)])
def test_info_lines_follow_verls_logging_level(level, shown):
    # a fresh interpreter, like a Ray actor: nobody configured the root logger
    env = {**os.environ, "VERL_LOGGING_LEVEL": level}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("verl_epo.trainer:restored entropy history from /x" in done.stderr) is shown
