"""Start-up as an operator meets it: a device the machine lacks, no network, a model that cannot load."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import ROOT, AppServer

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("device, says", [("cuda", "CUDA is not available here"), ("tpu", "unknown device 'tpu'")])
def test_a_device_this_machine_lacks_is_refused_at_start_naming_the_ones_it_has(device, says):
    if device == "cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = subprocess.run([sys.executable, "app.py", "--model", "tiny", "--device", device], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2
    assert f"--device {device}:" in run.stderr and says in run.stderr and "cpu" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout and "AssertionError" not in run.stderr


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_is_found_out_once_and_fast(tmp_path):
    """No HF_HUB_OFFLINE, and a Hub that refuses connections (a closed local port): one probe, one log
    line, then the local cache only. (Before: 30 s of retries and dozens of warnings before serving.)"""
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "",
           "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": ""}  # fmt: skip
    started = time.monotonic()
    server = AppServer("unreachable-hub", "--model", "sesame/csm-1b", env=env).wait_until_serving(timeout=120)
    try:
        assert time.monotonic() - started < 20
        log = server.log_path.read_text()
        assert "Retrying" not in log
        assert len([line for line in log.splitlines() if "is unreachable: only the local cache" in line]) == 1, log
    finally:
        server.stop()


def component(config: dict, elem_id: str) -> dict:
    return next(c["props"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def test_without_the_model_generate_is_off_and_the_banner_is_an_error(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": ""}
    server = AppServer("no-model-page", "--model", "sesame/csm-1b", env=env).wait_until_serving(timeout=120)
    try:
        config = httpx.get(server.url + "config", timeout=10).json()
        assert component(config, "generate")["interactive"] is False
        banner = component(config, "status-banner")
        assert "banner-error" in banner["elem_classes"] and "could not be loaded" in banner["value"]
        assert "not in the local Hugging Face cache" in banner["value"]  # the loader's reason
    finally:
        server.stop()
