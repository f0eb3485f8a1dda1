"""Every output is watermarked with Meta's AudioSeal, and anyone can check a clip with its public detector.

AudioSeal works at 16 kHz: a chunk's watermark is computed on a 16 kHz copy of it, brought back to
24 kHz and added, so the speech itself keeps its full band. Chunks are marked one by one as they are
generated, so the first audio is not delayed and the streamed chunks joined are exactly the WAV.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

import numpy as np
import soxr
import torch

log = logging.getLogger("csm-studio")

WATERMARK_RATE = 16_000  # AudioSeal's
NBITS = 16
DEFAULT_MESSAGE = 0xC5A1  # "this app"; a deployment sets its own (--watermark-message)
DETECTED = 0.5  # detection probability from which a clip counts as marked
DETECT_S = 30  # what a check reads of a clip: the mark is everywhere, and the detector's time is shared
GENERATOR_CARD, DETECTOR_CARD = "audioseal_wm_16bits", "audioseal_detector_16bits"  # audioseal's model cards
AUDIOSEAL_REPO = "facebook/audioseal"
# The real architecture at a fraction of its width: random weights, for tests and --model tiny.
TINY_SEANET = {"dimension": 16, "n_filters": 4, "lstm": 1, "ratios": [8, 5, 4, 2]}


def message_bits(message: int) -> torch.Tensor:
    """16-bit message -> [16] tensor of 0/1, most significant bit first."""
    return torch.tensor([(message >> (NBITS - 1 - i)) & 1 for i in range(NBITS)])


def bits_message(bits: torch.Tensor) -> int:
    return int("".join(str(int(b)) for b in bits.tolist()), 2)


@dataclass(frozen=True)
class Detection:
    probability: float  # the detector's: the share of the clip it finds marked
    message: int | None  # the 16-bit message read, when a watermark was found
    verdict: str  # "made by this app", "another message" or "none found"


def eager():
    """AudioSeal's SEANet asks torch.compile for some of its functions: compiling once per chunk length
    costs seconds on a CPU, far more than marking the chunk. Run them eagerly."""
    try:
        from audioseal.libs.moshi.utils.compile import no_compile
    except ImportError:  # Python < 3.10 builds audiocraft's modules, which are not compiled
        return contextlib.nullcontext()
    return no_compile()


class Watermarker:
    """AudioSeal's generator and detector, and the message that says "made by this app".

    `strength` scales the watermark: 1 for the trained model (AudioSeal's `alpha`); the tiny random
    model's would otherwise be as loud as the speech.
    """

    def __init__(self, generator, detector, message: int, description: str, strength: float = 1.0, device="cpu"):
        # The generator marks inside the generation job (on the GPU where there is one); the detector
        # answers anyone's check outside it, on the CPU, so a check never waits for a generation.
        self.device = torch.device(device)
        self.generator, self.detector = generator.eval().to(self.device), detector.eval()
        self.message, self.description, self.strength = message, description, strength
        self._bits = message_bits(message)
        self._mark_lock, self._detect_lock = threading.Lock(), threading.Lock()

    @torch.inference_mode()
    def mark(self, audio: np.ndarray, rate: int = 24_000) -> np.ndarray:
        """One chunk, marked: float32 at `rate`, the same length."""
        if len(audio) == 0:
            return audio
        low = soxr.resample(audio.astype(np.float32), rate, WATERMARK_RATE)
        with self._mark_lock, eager():
            low = torch.from_numpy(low).to(self.device)[None, None]
            mark = self.generator.get_watermark(low, message=self._bits.to(self.device))[0, 0]
        back = soxr.resample(self.strength * mark.float().cpu().numpy(), WATERMARK_RATE, rate)
        back = np.pad(back, (0, max(0, len(audio) - len(back))))[: len(audio)]
        return (audio + back).astype(np.float32)

    @torch.inference_mode()
    def detect(self, audio: np.ndarray, rate: int) -> Detection:
        """Whether a clip carries a watermark, and whose: its first DETECT_S seconds are read."""
        low = soxr.resample(audio[: int(DETECT_S * rate)].astype(np.float32), rate, WATERMARK_RATE)
        with self._detect_lock, eager():
            probability, bits = self.detector.detect_watermark(torch.from_numpy(low)[None, None])
        probability, bits = float(probability[0]), bits.cpu()
        if probability < DETECTED:
            return Detection(round(probability, 4), None, "none found")
        message = bits_message(bits[0])
        verdict = "made by this app" if message == self.message else "another message"
        return Detection(round(probability, 4), message, verdict)


_watermarkers: dict[tuple, Watermarker] = {}
_watermarkers_lock = threading.Lock()


def load_watermarker(tiny: bool = False, message: int = DEFAULT_MESSAGE, device: str = "cpu") -> Watermarker:
    """AudioSeal's 16-bit models (from the Hub, or the Hugging Face cache), or with `tiny` a small
    random model of the same architecture that needs nothing from the network. Cached per arguments;
    on the generator's device, where marking a chunk costs least."""
    key = (tiny, message, str(device))
    with _watermarkers_lock:
        if key not in _watermarkers:
            _watermarkers[key] = _build(tiny, message, device)
        return _watermarkers[key]


def _build(tiny: bool, message: int, device: str = "cpu") -> Watermarker:
    from audioseal.builder import AudioSealDetectorConfig, AudioSealWMConfig, create_detector, create_generator

    generator = _model(GENERATOR_CARD, AudioSealWMConfig, create_generator, tiny)
    detector = _model(DETECTOR_CARD, AudioSealDetectorConfig, create_detector, tiny)
    if tiny:
        description = "tiny random AudioSeal: its verdicts mean nothing"
        return Watermarker(generator, detector, message, description, strength=0.01, device=device)
    return Watermarker(generator, detector, message, "AudioSeal 16-bit", device=device)


def _model(card: str, schema, create, tiny: bool):
    """One of AudioSeal's models, built from its own model card. The real weights come through csm.hub
    (the Hugging Face cache; offline, nothing is asked of the network), the tiny ones from a fixed seed."""
    from audioseal import AudioSeal
    from audioseal.loader import convert_state_dict_for_scriptable_model, load_local_model_config, load_state_dict
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(load_local_model_config(card))
    filename = values.pop("checkpoint").rsplit("/", 1)[-1]  # e.g. generator_base.pth
    state = None
    if tiny:
        values["seanet"].update(TINY_SEANET)
    else:
        from csm.hub import download

        # The official files hold an omegaconf config beside the weights, hence a full unpickle
        # (as audioseal itself does); they come only from this pinned repository.
        checkpoint = torch.load(download(AUDIOSEAL_REPO, filename), map_location="cpu", weights_only=False)
        values = {**checkpoint.get("xp.cfg", {}), **values}
        state = checkpoint.get("best_state", {}).get("model") or checkpoint.get("model") or checkpoint
    with torch.random.fork_rng():  # the same tiny model in every process, and the caller's seed untouched
        torch.manual_seed(0)
        model = create(AudioSeal.parse_config(values, config_type=schema, nbits=NBITS))
    if state is not None:
        load_state_dict(model, state_dict=convert_state_dict_for_scriptable_model(state))
    return model
