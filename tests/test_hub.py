"""csm.hub: Hub errors translated once, and the switch to offline mode when the Hub does not answer.

Only localhost is ever asked: closed ports, a socket that never answers, a tiny HTTP server.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub import errors as hub_errors

from csm import hub

REPO = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_error(kind, status: int):
    request = httpx2.Request("GET", "https://huggingface.co/someone/repo/resolve/main/tokenizer.json")
    return kind(f"{status} error", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize(
    "error, reason, words",
    [
        (http_error(hub_errors.GatedRepoError, 401), hub.GATED, ["gated", "accept its terms", "HF_TOKEN"]),
        (http_error(hub_errors.RepositoryNotFoundError, 404), hub.NO_REPO, ["not a Hub repository", "spelling"]),
        (http_error(hub_errors.RevisionNotFoundError, 404), hub.NO_REVISION, ["revision 'v9' does not exist"]),
        (http_error(hub_errors.RemoteEntryNotFoundError, 404), hub.NO_FILE, ["has no file tokenizer.json"]),
        (hub_errors.HFValidationError("bad repo id"), hub.OTHER, ["HFValidationError: bad repo id"]),
    ],
)
def test_download_translates_each_hub_error(monkeypatch, error, reason, words):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr("huggingface_hub.hf_hub_download", failing)
    with pytest.raises(hub.HubFileError) as caught:
        hub.download("someone/repo", "tokenizer.json", revision="v9")
    assert caught.value.reason == reason and not caught.value.hub_unreachable
    for word in words:
        assert word in caught.value.why


def test_download_offline_and_not_cached_says_hf_hub_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(hub.HubFileError) as caught:
        hub.download("someone/repo", "config.json")
    assert caught.value.reason == hub.NOT_CACHED
    assert "HF_HUB_OFFLINE=1 is set" in caught.value.why and "not in the local Hugging Face cache" in caught.value.why
    assert not caught.value.hub_unreachable  # offline mode kept us from asking: nothing was learnt about the Hub


@pytest.mark.parametrize(
    "name, is_path", [("./ckpt", True), ("/abs/ckpt", True), ("~/ckpt", True), ("a/b/c", True),
                      ("C:\\ckpt", True), ("sesame/csm-1b", False), ("gpt2", False)],
)  # fmt: skip
def test_looks_like_path(name, is_path):
    assert hub.looks_like_path(name) is is_path


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub in online mode for this test; whatever go_offline_if_unreachable changes is undone."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored afterwards, even if the code sets it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_switched_offline", False)
    return monkeypatch


def test_already_offline_returns_false_without_asking(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_answers", lambda *a: pytest.fail("the Hub was asked although offline mode is on"))
    assert hub.go_offline_if_unreachable() is False


def test_any_http_answer_counts_as_reachable(online):
    class NotImplementedEverywhere(http.server.BaseHTTPRequestHandler):  # answers HEAD with 501
        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotImplementedEverywhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub.go_offline_if_unreachable(timeout=5) is False
    finally:
        server.shutdown()
        server.server_close()
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


def test_silent_server_is_unreachable_after_the_timeout(online, caplog):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        started = time.monotonic()
        with caplog.at_level("INFO", logger="csm"):
            assert hub.go_offline_if_unreachable(timeout=0.5) is True
        assert time.monotonic() - started < 3
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    assert [r.name for r in caplog.records] == ["csm"] and "unreachable" in caplog.records[0].getMessage()
    assert hub.go_offline_if_unreachable() is False  # once offline, never asked again


PROBE_SCRIPT = textwrap.dedent(
    """
    import json, logging, time
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from csm import hub

    started = time.monotonic()
    switched = hub.go_offline_if_unreachable()
    probe_seconds = time.monotonic() - started
    started = time.monotonic()
    try:
        hf_hub_download("someone/not-cached", "config.json")
        error = None
    except LocalEntryNotFoundError as e:
        error = type(e).__name__
    download_seconds = time.monotonic() - started
    try:
        hub.download("someone/not-cached", "config.json")
    except hub.HubFileError as e:
        why = e.why
    print(json.dumps(dict(switched=switched, probe_seconds=probe_seconds, error=error,
                          download_seconds=download_seconds, why=why, again=hub.go_offline_if_unreachable())))
    """
)


def run_probe(tmp_path, **env) -> tuple[dict, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    environment |= {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_CACHE": str(tmp_path / "cache"), **env}
    done = subprocess.run([sys.executable, "-c", PROBE_SCRIPT], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_unreachable_hub_switches_a_fresh_process_offline(tmp_path):
    """A process started without a network: one quick probe, one log line, then straight to the cache."""
    result, log = run_probe(tmp_path)
    assert result["switched"] is True and result["probe_seconds"] < 5
    assert result["error"] == "LocalEntryNotFoundError" and result["download_seconds"] < 2  # no retries
    assert "did not answer when this program started" in result["why"]
    assert result["again"] is False
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("csm WARNING") and "unreachable" in lines[0], log
    assert "Retrying" not in log


def test_offline_process_is_not_probed(tmp_path):
    result, log = run_probe(tmp_path, HF_HUB_OFFLINE="1")
    assert result["switched"] is False and result["probe_seconds"] < 0.5
    assert "HF_HUB_OFFLINE=1 is set" in result["why"]
    assert "csm WARNING" not in log
