"""Preset voices: the shipped synthetic clips, and sesame/csm-1b's own prompts when the Hub is reachable."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from csm.audio import load_audio, save_wav, to_mono
from csm.hub import download
from studio.inputs import SAMPLE_RATE
from studio.outputs import OUTPUT_DIR

log = logging.getLogger("csm-studio")

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
PRESETS_FILE = EXAMPLES_DIR / "presets.json"


@dataclass(frozen=True)
class Preset:
    id: str
    name: str  # e.g. "Maple (synthetic, UK female)"
    path: Path
    transcript: str
    official: bool = False

    @property
    def short_name(self) -> str:
        """What the page calls the speaker: "Maple"."""
        return self.name.split(" (", 1)[0]


class PresetLibrary:
    """The voices in examples/presets.json; the Hub prompts are fetched in the background."""

    def __init__(self, manifest: Path = PRESETS_FILE):
        data = json.loads(manifest.read_text())
        self.about = data.get("about", "")
        self.shipped = [
            Preset(p["id"], p["name"], manifest.parent / p["file"], p["transcript"]) for p in data["presets"]
        ]
        self._hub_specs = data.get("hub_prompts", [])
        self._hub: list[Preset] = []
        self._lock = threading.Lock()
        self._audio: dict[Path, torch.Tensor] = {}

    def all(self) -> list[Preset]:
        """Official prompts first (when fetched), then the shipped ones."""
        with self._lock:
            return [*self._hub, *self.shipped]

    def get(self, preset_id: str) -> Preset | None:
        return next((p for p in self.all() if p.id == preset_id), None)

    def audio(self, preset: Preset) -> torch.Tensor:
        with self._lock:
            if preset.path not in self._audio:
                samples, rate = load_audio(preset.path)
                self._audio[preset.path] = to_mono(samples, rate, SAMPLE_RATE)
            return self._audio[preset.path]

    def fetch_hub_prompts(self) -> threading.Thread:
        """Start fetching the official prompts; start-up never waits for the Hub."""
        thread = threading.Thread(target=self._fetch_hub_prompts, name="hub-prompts", daemon=True)
        thread.start()
        return thread

    def _fetch_hub_prompts(self) -> None:
        found, missing = [], []
        for spec in self._hub_specs:
            try:  # offline (HF_HUB_OFFLINE, or found unreachable at start): cached files only
                found.append(self._fetch_hub_prompt(spec))
            except Exception as e:  # offline, gated without a token, moved: the others (and the shipped) will do
                missing.append(f"{spec['id']} ({type(e).__name__})")
        with self._lock:
            self._hub = found
        if missing:
            log.info("Official prompt voices unavailable: %s; offering the shipped ones.", ", ".join(missing))
        if found:
            log.info("Official prompt voices available: %s", ", ".join(p.id for p in found))

    @staticmethod
    def _fetch_hub_prompt(spec: dict) -> Preset:
        cached = download(spec["repo_id"], spec["file"])
        # A 24 kHz mono copy in the temp dir: smaller to preview, and gradio may serve it.
        samples, rate = load_audio(cached)
        local = OUTPUT_DIR / "presets" / f"{spec['id']}.wav"
        local.parent.mkdir(parents=True, exist_ok=True)
        save_wav(local, to_mono(samples, rate, SAMPLE_RATE), SAMPLE_RATE)
        return Preset(spec["id"], spec["name"], local, spec["transcript"], official=True)
