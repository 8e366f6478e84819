"""Fixtures: the golden vectors, and the real `tally proxy` in front of the test upstream
(bindings/testkit/serve.py), started once per session."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
TESTKIT = os.path.join(ROOT, "bindings", "testkit")


@pytest.fixture(scope="session")
def vectors():
    with open(os.path.join(ROOT, "testdata", "vectors.json")) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def proxy(tmp_path_factory):
    """The running proxy's env.json (see serve.py)."""
    out = tmp_path_factory.mktemp("proxy")
    # The upstream needs numpy & co.: $TALLY_PYTHON may name an interpreter that has them.
    python = os.environ.get("TALLY_PYTHON", sys.executable)
    proc = subprocess.Popen([python, os.path.join(TESTKIT, "serve.py"), str(out)])
    env_path = out / "env.json"
    deadline = time.time() + 300
    while not env_path.exists():
        if proc.poll() is not None:
            pytest.fail(f"serve.py exited with {proc.returncode}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the proxy was not ready in 300 s")
        time.sleep(0.1)
    env = json.loads(env_path.read_text())
    env["dir"] = str(out)
    yield env
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
