"""Fixtures for the app tests: `python app.py` servers on the tiny model, each in its own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
RATINGS = ARTIFACTS / "ratings"  # the tiny app's ratings table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python app.py ARGS` on a free localhost port, offline; its log goes to tests/artifacts/."""

    def __init__(self, name: str, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"server-{name}.log"
        environment = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            **(env or {}),
        }
        with open(self.log_path, "w") as log:
            command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port), *args]
            self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)

    def wait_until_serving(self, timeout: float = 180) -> AppServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"app.py exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"app.py did not serve {self.url} within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def tiny_app():
    """The app as a user starts it offline: `python app.py --model tiny` (its ratings kept in tests/artifacts)."""
    server = AppServer("tiny", "--model", "tiny", env={"CSM_STUDIO_RATINGS_DIR": str(RATINGS)}).wait_until_serving()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_client(tiny_app):
    from gradio_client import Client

    return Client(tiny_app.url, verbose=False, analytics_enabled=False, download_files=str(ARTIFACTS / "downloads"))


# -- the generator's two attention paths: for the modules whose `generator` fixture is a tiny generator


@pytest.fixture(params=["written-slots", "full-cache"])
def attention(request, generator):
    """Both attention paths (on the module's own `generator` fixture): the CPU's (written slots only) and CUDA's (all slots, stale ones masked)."""
    stacks = (generator.model.backbone, generator.model.decoder)
    for stack in stacks:
        stack.attend_written_only = request.param == "written-slots"
    yield request.param
    for stack in stacks:
        stack.attend_written_only = True


# -- checkpoints for the loading tests: a small transformers CSM (the oracle) saved in either layout


@pytest.fixture(scope="module")
def oracle():
    from tests.oracle import build_oracle

    return build_oracle("gqa-llama3")


@pytest.fixture
def hf_folder(oracle, tmp_path):
    from tests.oracle import save_transformers_layout

    return save_transformers_layout(oracle, tmp_path / "hf")
