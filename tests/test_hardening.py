"""One small request must not take the Space down: hostile inputs against a running `python app.py --model tiny`.

Each is refused with a message naming the problem, within seconds, while another client's small request
is served; the server's peak memory (VmHWM in /proc) stays under PEAK_RSS_MB throughout.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import ROOT, AppServer

pytestmark = pytest.mark.slow

PEAK_RSS_MB = 1500  # the tiny model's server idles at about 600 MB
RIVER = ROOT / "examples" / "river.wav"


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gradio-uploads")


@pytest.fixture(scope="module")
def server(upload_dir):
    env = {"GRADIO_TEMP_DIR": str(upload_dir), "CSM_STUDIO_UPLOAD_LEFTOVER_S": "2"}
    app = AppServer("hardening", "--model", "tiny", env=env).wait_until_serving()
    yield app
    app.stop()


def client(server) -> Client:
    return Client(server.url, verbose=False, analytics_enabled=False, download_files=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hostile")

    def constant(name, seconds, rate, channels=1):
        """A clip of one value, written a second at a time (10 min of 8 x 192 kHz is 3.7 GB as floats)."""
        block = np.full((rate, channels), 0.1, np.float32)
        with sf.SoundFile(folder / name, "w", rate, channels, subtype="PCM_16") as f:
            for _ in range(int(seconds)):
                f.write(block)
        return folder / name

    return {
        "1 Hz": constant("one-hz.wav", 48_000, 1),  # 96 KB whose header says 48,000 s at 1 Hz
        "8ch 192 kHz 10 min": constant("big.flac", 600, 192_000, 8),  # about 1 MB: one value compresses away
        "16 channels": constant("sixteen.wav", 1, 24_000, 16),
        "small flac": constant("small.flac", 2, 24_000),
        "20 s": constant("twenty.flac", 20, 24_000),
    }


def context(paths: list, text="Some words.") -> dict:
    return {
        "context_audio": [handle_file(str(p)) for p in paths],
        "context_text": [text] * len(paths),
        "context_speakers": [0] * len(paths),
    }


HOSTILE = {
    "1 Hz header": (lambda f: {"text": "Hi", **context([f["1 Hz"]])}, "declares a sample rate of 1 Hz"),
    "8-channel 10-minute FLAC": (lambda f: {"text": "Hi", **context([f["8ch 192 kHz 10 min"]])}, "is 600 s long"),
    "16 channels": (lambda f: {"text": "Hi", **context([f["16 channels"]])}, "has 16 channels; at most 8"),
    "one clip 100 times": (lambda f: {"text": "Hi", **context([f["small flac"]] * 100)}, "at most 32 audio files"),
    "400 s of clips": (lambda f: {"text": "Hi", **context([f["20 s"]] * 20)}, "hold 400 s of audio together"),
    "a 200,000-character transcript": (
        lambda f: {"text": "Hi", **context([RIVER], text="word " * 40_000)},
        "The transcript of context turn 1 is 200,000 characters long; at most 4,000",
    ),
    "a 100,000-character script": (
        lambda f: {"script": "[0] " + "hello " * 16_666, "api_name": "/generate_script"},
        "The script is 100,000 characters long",
    ),
    "voices with 1,000 speakers": (
        lambda f: {"text": "Hi", "voices": {str(i): "river" for i in range(1000)}},
        "voices must map speaker numbers (0 to 9)",
    ),
    "24 turns of 60 s": (
        lambda f: {"script": "[0] Hi.\n" * 24, "max_seconds": 60, "api_name": "/generate_script"},
        "ask for up to 1,440 s of audio; one request can ask for at most 120 s",
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_request_is_refused_fast_and_others_are_served(server, files, case):
    make, message = HOSTILE[case]
    request = make(files)
    api_name = request.pop("api_name", "/generate")
    outcome = {}

    def hostile():
        started = time.monotonic()
        try:
            client(server).predict(**request, api_name=api_name)
        except AppError as e:
            outcome["message"] = str(e)
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=hostile)
    thread.start()
    audio, info = client(server).predict(text="Meanwhile.", max_seconds=0.5, seed=1, api_name="/generate")
    thread.join(timeout=60)
    assert sf.info(audio["path"]).frames > 0 and info["seed"] == 1  # the other user was served
    assert message in outcome.get("message", ""), outcome
    assert outcome["seconds"] < 15, outcome  # uploads included; refusing itself is instant
    assert peak_rss_mb(server.process.pid) < PEAK_RSS_MB


def raw_post(server, path: str, headers: dict, body: bytes = b"") -> tuple[int, str]:
    """A POST over a plain socket: the answer to what a request declares, whatever is (not) sent after."""
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **headers}.items())
    answer = b""
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body)
        try:  # the status line, then the body: read until the server has said its piece
            while b"\r\n0\r\n" not in answer and (chunk := connection.recv(65536)):
                answer += chunk
        except TimeoutError:
            pass
    text = answer.decode(errors="replace")
    return int(text.split()[1]), text


def test_a_huge_body_is_refused_before_it_is_read(server):
    json_headers = {"Content-Type": "application/json"}
    for path in ("/gradio_api/queue/join", "/gradio_api/call/upload", "/gradio_api/run/upload"):
        status, answer = raw_post(server, path, {**json_headers, "Content-Length": str(20 << 20)})
        assert status == 413 and "larger than 1 MB" in answer, (path, answer)
    status, answer = raw_post(server, "/gradio_api/upload", {"Content-Length": str(200 << 20)})
    assert status == 413 and "larger than 51 MB" in answer
    status, answer = raw_post(server, "/gradio_api/queue/join", {**json_headers, "Transfer-Encoding": "chunked"})
    assert status == 411  # a body that does not say its length is not read
    assert peak_rss_mb(server.process.pid) < PEAK_RSS_MB


def queue_error(server, api_name: str, data: list) -> str:
    """The message of a request sent as raw JSON (as any client may), bypassing gradio_client's uploads."""
    config = httpx.get(server.url + "config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    session = uuid.uuid4().hex
    httpx.post(server.url + "gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session})
    with httpx.stream("GET", f"{server.url}gradio_api/queue/data?session_hash={session}", timeout=30) as events:
        for line in events.iter_lines():
            if "process_completed" in line:
                return line


def test_context_audio_names_only_uploaded_files(server):
    """A forged entry naming a server file is refused before the file is looked at: by the app when it is a
    bare path, by gradio's own check when it claims to be one of gradio's files."""
    bare = queue_error(server, "generate", ["Hi", 0, [{"path": "/etc/passwd"}], ["Words."], [0], {}, 0.9, 50, 1, -1, 1])
    assert "context_audio must be" in bare, bare
    claimed = {"path": str(RIVER), "meta": {"_type": "gradio.FileData"}}
    forged = queue_error(server, "generate", ["Hi", 0, [claimed], ["Words."], [0], {}, 0.9, 50, 1, -1, 1])
    assert '"success": false' in forged or '"success":false' in forged, forged
    for answer in (bare, forged):
        assert "no longer on the server" not in answer and "cannot be read" not in answer  # nothing was read


# -- uploads ----------------------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(server, upload_dir):
    before = set(upload_dir.glob("tmp*"))
    files = {"files": ("big.wav", b"\0" * (52 << 20), "audio/wav")}
    response = httpx.post(server.url + "gradio_api/upload", files=files, timeout=60)
    assert response.status_code == 413, response.text
    assert set(upload_dir.glob("tmp*")) <= before  # (the sweeper may remove older ones meanwhile)


def test_an_aborted_upload_leaves_no_file(server, upload_dir):
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cut.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()  # fmt: skip
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {10 << 20}\r\n\r\n".encode()
            + head
            + b"\0" * (1 << 20)
        )
        deadline = time.monotonic() + 10
        while not list(upload_dir.glob("tmp*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(upload_dir.glob("tmp*")), "the cut-off upload never reached the disk"
    deadline = time.monotonic() + 20  # the server was started with abandoned uploads swept after 2 s
    while list(upload_dir.glob("tmp*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not list(upload_dir.glob("tmp*"))


def test_only_the_offered_clips_are_served_from_examples(server):
    examples = ROOT / "examples"
    assert httpx.get(f"{server.url}gradio_api/file={examples / 'river.wav'}").status_code == 200
    for private in ("presets.json", "make_presets.py"):
        assert httpx.get(f"{server.url}gradio_api/file={examples / private}").status_code in (403, 404)


# -- other users -----------------------------------------------------------------------------------


def test_reuse_of_another_users_prompt_is_not_reported(server):
    request = {"text": "Same voices.", "voices": {"0": "atlas"}, "max_seconds": 0.5, "seed": 3}
    _, first = client(server).predict(**request, api_name="/generate")
    _, other = client(server).predict(**request, api_name="/generate")  # another user, the same prompt
    assert other["turns"][0]["reused_context_frames"] == 0
    same = client(server)
    same.predict(**request, api_name="/generate")
    _, again = same.predict(**request, api_name="/generate")  # the same user again: reported
    assert again["turns"][0]["reused_context_frames"] > 0


def test_every_bad_argument_gets_a_message_that_names_it(server):
    names = {"text": "text", "speaker": "speaker", "context_audio": "context_audio", "context_text": "context",
             "context_speakers": "context", "voices": "voices", "temperature": "Temperature", "topk": "Top-k",
             "max_seconds": "Max length", "seed": "Seed"}  # fmt: skip
    values = ["x", 1.5, -7, [1], {"a": 1}, "1e400", 10**30, True]
    fuzz, log_before = client(server), len(server.log_path.read_text())
    for argument, named in names.items():
        for value in values:
            request = {"text": "Hi", "max_seconds": 0.5, argument: value}
            try:
                fuzz.predict(**request, api_name="/generate")
            except AppError as e:
                assert named in str(e) or argument in str(e), (argument, value, str(e))
                assert "unexpectedly" not in str(e)
    assert "Traceback" not in server.log_path.read_text()[log_before:]  # refusals are not logged as failures


# -- memory ------------------------------------------------------------------------------------------


def test_memory_stays_flat_over_many_fresh_clients(server):
    """Requests from fresh sessions (each a new client) over plain HTTP: after warm-up, RSS stays flat."""
    config = httpx.get(server.url + "config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")
    http = httpx.Client(timeout=30)

    def request():
        session = uuid.uuid4().hex
        data = ["", 0, [], [], [], {}, 0.9, 50, 1, -1, 1]  # refused at once: the cost is the session's
        http.post(server.url + "gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                                              "session_hash": session})  # fmt: skip
        with http.stream("GET", f"{server.url}gradio_api/queue/data?session_hash={session}") as events:
            for line in events.iter_lines():
                if "process_completed" in line:
                    break

    for _ in range(600):  # past the session capacity (500): the oldest sessions now make room
        request()
    warm = rss_mb(server.process.pid)
    for _ in range(500):
        request()
    assert rss_mb(server.process.pid) - warm < 25
