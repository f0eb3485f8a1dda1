"""Many clients at once: every request is answered with its own result, and a full queue says 'busy'."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client
from gradio_client.utils import QueueError, Status

from tests.conftest import ARTIFACTS, AppServer

pytestmark = pytest.mark.slow

CLIENTS = 8
TEXTS = [
    "Hello there, how are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "Could you tell me where the train station is?",
    "It's just around the corner, past the coffee shop.",
    "We went to the beach last summer.",
    "Do you remember the name of that song?",
    "Let's meet at seven o'clock.",
    "Thank you so much, that was very kind.",
]


def request(i: int) -> dict:
    """Request i: its own text, speaker and seed; even ones greedy, odd ones sampled (seeded)."""
    return {
        "text": TEXTS[i],
        "speaker": i % 2,
        "seed": 1000 + i,
        "topk": 1 if i % 2 == 0 else 50,
        "max_seconds": 1.5,
        "voices": {"0": "river", "1": "maple"},
    }


def test_eight_clients_at_once_each_get_their_own_result(tiny_app, tiny_client):
    sequential = [tiny_client.predict(**request(i), api_name="/generate") for i in range(CLIENTS)]

    clients = [
        Client(tiny_app.url, verbose=False, analytics_enabled=False, download_files=str(ARTIFACTS / "downloads"))
        for _ in range(CLIENTS)
    ]
    jobs = [client.submit(**request(i), api_name="/generate") for i, client in enumerate(clients)]
    results = [job.result(timeout=240) for job in jobs]

    for i, ((audio_path, info), (reference_path, _)) in enumerate(zip(results, sequential)):
        turn = info["turns"][0]
        assert (turn["text"], turn["speaker"], info["seed"]) == (TEXTS[i], i % 2, 1000 + i), (
            f"request {i} got another's result"
        )
        audio, rate = sf.read(audio_path, dtype="float32")
        reference, _ = sf.read(reference_path, dtype="float32")
        assert rate == 24_000 and len(audio) > 0
        np.testing.assert_array_equal(audio, reference, err_msg=f"request {i} differs from the same request run alone")


@pytest.fixture(scope="module")
def small_queue_app():
    """A second app whose queue holds one waiting request (CSM_STUDIO_QUEUE_SIZE=1)."""
    server = AppServer("small-queue", "--model", "tiny", env={"CSM_STUDIO_QUEUE_SIZE": "1"}).wait_until_serving()
    yield server
    server.stop()


def test_a_full_queue_answers_busy_and_the_app_keeps_serving(small_queue_app):
    client = Client(
        small_queue_app.url, verbose=False, analytics_enabled=False, download_files=str(ARTIFACTS / "downloads")
    )
    long_turn = {"text": "Hello there, how are you doing today?", "max_seconds": 30, "topk": 1}
    first = client.submit(**long_turn, api_name="/generate")
    deadline = time.monotonic() + 60
    while first.status().code != Status.PROCESSING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.status().code == Status.PROCESSING

    flood = [client.submit(text=f"Request {i}.", max_seconds=1, api_name="/generate") for i in range(6)]
    assert httpx.get(small_queue_app.url, timeout=10).status_code == 200  # the page is served meanwhile
    outcomes = []
    for job in flood:
        try:
            outcomes.append(job.result(timeout=240))
        except QueueError as e:
            outcomes.append(e)
    busy = [o for o in outcomes if isinstance(o, QueueError)]
    served = [o for o in outcomes if not isinstance(o, QueueError)]
    assert busy, "the queue never filled up"
    assert all("Queue is full" in str(e) for e in busy)  # gradio's clear answer; the browser shows "currently busy"
    assert served, "the one request the queue had room for was not served"
    for audio_path, _ in [first.result(timeout=240), *served]:
        assert sf.info(audio_path).samplerate == 24_000 and sf.info(audio_path).frames > 0

    audio_path, info = client.predict(text="Still serving.", max_seconds=1, seed=5, api_name="/generate")
    assert info["seed"] == 5 and sf.info(audio_path).frames > 0
