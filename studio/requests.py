"""Requests -> jobs: every voice, clip, line and setting of a request checked, read and fitted to the
model's window before any GPU time is spent. The Studio inherits this half; the API and page call the Studio.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from csm.generator import FRAME_MS, Generator, Segment
from studio.asr import TINY as TINY_ASR
from studio.clips import check_request_clips, check_transcript, cleaned_clip
from studio.errors import InputError, capitalized
from studio.inputs import (
    MAX_CLIPS,
    MAX_REQUEST_SECONDS,
    SAMPLE_RATE,
    Line,
    Settings,
    check_speaker,
    check_takes,
    plural,
)
from studio.jobs import ContextClip, Job


@dataclass
class Voice:
    """A speaker prompt as asked for: a preset id, or an own clip with its transcript."""

    speaker: int
    preset_id: str | None = None
    path: str | None = None
    transcript: str | None = None


class Requests:
    """The Studio's requests -> jobs half: it needs the Studio's presets, require_generator(), model_key,
    watermark_key, asr_model and transcribe_audio()."""

    def prepare(self, lines: list[Line], voices: list[Voice], turns: tuple, settings: tuple, **options) -> Job:
        """A request as the API and the page both make it -> a Job, every part checked first.

        `turns` is the conversation so far as (paths, transcripts, speakers); `settings` as
        (temperature, topk, max_seconds, seed), as typed; `options` go to build_job. `transcribe=False`
        leaves an empty transcript empty (the context meter: it must not run the speech recogniser).
        """
        transcribe = options.pop("transcribe", True)
        if "takes" in options:  # said before any clip is read
            options["takes"] = check_takes(options["takes"])
        settings = Settings.parse(*settings)
        check_request_seconds(len(lines), settings)
        own = [(voice.path, f"speaker {voice.speaker}'s own voice") for voice in voices if voice.preset_id is None]
        for voice in voices:
            if voice.preset_id is None:
                check_transcript(voice.transcript, f"speaker {voice.speaker}'s own voice")
        turns = self.context_turns(*turns, other_clips=own, transcribe=transcribe)
        return self.build_job(lines, voices, turns, settings, transcribe=transcribe, **options)

    def voice_prompt(self, voice: Voice, used: bool = True) -> tuple[ContextClip, str]:
        """A speaker prompt and the voice's name, from a preset id or an own clip (an unused one is checked,
        not transcribed)."""
        if voice.preset_id is None:
            label = f"speaker {voice.speaker}'s own voice"
            return self.own_clip(voice.path, voice.transcript, voice.speaker, label, True, transcribe=used), "own"
        preset = self.presets.get(voice.preset_id)
        if preset is None:
            known = ", ".join(p.id for p in self.presets.all())
            raise InputError(
                f"There is no preset voice {voice.preset_id!r} (for speaker {voice.speaker}); the presets are: {known}."
            )
        segment = Segment(voice.speaker, preset.transcript, self.presets.audio(preset))
        return ContextClip(segment, f"speaker {voice.speaker}'s voice ({preset.short_name})", True), preset.short_name

    def context_turns(self, paths, transcripts, speakers, label="context turn", other_clips=(),
                      transcribe=True) -> list[ContextClip]:  # fmt: skip
        """The conversation so far as clips; the request's clips (with `other_clips`) are checked together
        from their headers before any is decoded."""
        for name, value in (("context_audio", paths), ("context_text", transcripts), ("context_speakers", speakers)):
            if value is not None and not isinstance(value, (list, tuple)):
                raise InputError(f"{name} must be a list, one entry per context clip, got {type(value).__name__}.")
        paths, transcripts, speakers = list(paths or []), list(transcripts or []), list(speakers or [])
        if len(transcripts) <= MAX_CLIPS:  # every transcript before any clip is read (more: refused next)
            for i, transcript in enumerate(transcripts):
                check_transcript(transcript, f"{label} {i + 1}")
        check_request_clips([*other_clips, *((path, f"{label} {i + 1}") for i, path in enumerate(paths))])
        if not len(paths) == len(transcripts) == len(speakers):
            raise InputError(
                f"The context has {plural(len(paths), 'clip')}, {plural(len(transcripts), 'transcript')} and "
                f"{plural(len(speakers), 'speaker')}: give one transcript and one speaker for every clip, in order."
            )
        names = [f"{label} {i + 1}" for i in range(len(paths))]
        speakers = [check_speaker(s, f"{capitalized(name)}: the speaker") for s, name in zip(speakers, names)]
        return [self.own_clip(*clip, prompt=False, transcribe=transcribe)
                for clip in zip(paths, transcripts, speakers, names)]  # fmt: skip

    def own_clip(self, path, transcript, speaker: int, label: str, prompt: bool, transcribe=True) -> ContextClip:
        """A user's clip, cleaned up as a voice prompt or as a conversation turn (clips.cleaned_clip), with
        its transcript: an empty one is made by the speech recogniser, from the cleaned-up audio."""
        check_transcript(transcript, label)
        cleaned = cleaned_clip(path, label, "voice" if prompt else "turn")
        text = " ".join((transcript or "").split())
        automatic = not text and transcribe
        if automatic:
            text = self.transcribe_audio(cleaned.audio, label)
        problems = [f"The clip of {label}: {problem}" for problem in cleaned.problems]
        segment = Segment(speaker, text, torch.from_numpy(cleaned.audio))
        return ContextClip(segment, label, prompt, automatic=automatic, problems=problems)

    def build_job(self, lines: list[Line], voices: list[Voice], turns: list[ContextClip], settings: Settings,
                  note_unused_voices: bool = True, session: str | None = None, takes=1, first_turn=0,
                  transcribe=True) -> Job:  # fmt: skip
        """Check every voice, clip and line, and that they fit the model's window, before any GPU time is spent.

        A voice prompt is used only for a speaker who speaks (a line or a context turn): another would only
        lengthen the prompt. The API says so in the report; the page, whose idle cards are normal, does not.
        """
        generator = self.require_generator()
        speaking = {line.speaker for line in lines} | {clip.segment.speaker for clip in turns}
        prompts, names, unused = [], {}, []
        for voice in sorted(voices, key=lambda v: v.speaker):
            clip, name = self.voice_prompt(voice, transcribe and voice.speaker in speaking)  # broken: worth knowing
            if voice.speaker in speaking:
                prompts.append(clip)
                names[voice.speaker] = name
            else:
                unused.append(voice.speaker)
        context = prompts + turns
        self.check_fits(generator, lines, context, settings)
        notes = self.clip_notes(context)
        if unused and note_unused_voices:
            one = len(unused) == 1
            notes.append(f"{speakers_phrase(unused)} say{'s' if one else ''} nothing in this request, so "
                         f"{'its voice was' if one else 'their voices were'} not used.")  # fmt: skip
        unvoiced = sorted({line.speaker for line in lines} - {clip.segment.speaker for clip in context})
        if unvoiced:
            notes.append(f"{speakers_phrase(unvoiced)} {'has' if len(unvoiced) == 1 else 'have'} no voice prompt "
                         "and no earlier turn, so the model picked a voice at random.")  # fmt: skip
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        return Job(self.model_key, lines, context, settings, seed, names, notes, session, self.watermark_key,
                   takes=check_takes(takes), first_turn=first_turn)  # fmt: skip

    def clip_notes(self, context: list[ContextClip]) -> list[str]:
        """What the clean-up found wrong with the clips (clipping), and that the tiny Whisper's text is nonsense."""
        notes = [problem for clip in context for problem in clip.problems]
        automatic = [clip.label for clip in context if clip.automatic]
        if automatic and self.asr_model == TINY_ASR:
            notes.append(f"The transcript of {' and '.join(automatic)} was made by a tiny random Whisper "
                         "(a test model): it is nonsense, not what the clip says.")  # fmt: skip
        return notes

    def check_fits(self, generator: Generator, lines: list[Line], context: list[ContextClip], settings) -> None:
        """Refuse a line, or a single clip, that cannot fit the window next to the longest reply."""
        budgets = []
        for line in lines:
            try:
                budgets.append(generator.context_budget(line.text, line.speaker, settings.max_frames * FRAME_MS))
            except ValueError:
                window = generator.model.max_seq_len
                raise InputError(
                    f"The text plus a reply of up to {settings.max_seconds:g} s does not fit the model's window of "
                    f"{window} frames ({window * FRAME_MS / 1000:.0f} s): shorten the text or lower the max length."
                ) from None
        for clip in context:
            if generator.segment_frames(clip.segment) > min(budgets):
                seconds = len(clip.segment.audio) / SAMPLE_RATE
                room = max(min(budgets) * FRAME_MS / 1000 - 2, 0)
                raise InputError(
                    f"The clip of {clip.label} is {seconds:.0f} s long, too long for the model's context: "
                    f"with a reply of up to {settings.max_seconds:g} s, about {room:.0f} s of audio fit. "
                    "Use a shorter clip (5 to 30 s is plenty for a voice) or lower the max length."
                )


def check_request_seconds(turns: int, settings: Settings) -> None:
    """The most audio one request may ask for: the GPU is shared, and a request holds it while it runs."""
    asked = turns * settings.max_seconds
    if asked > MAX_REQUEST_SECONDS:
        most = MAX_REQUEST_SECONDS // turns
        raise InputError(
            f"{plural(turns, 'turn')} of up to {settings.max_seconds:g} s ask for up to {asked:,.0f} s of audio; one "
            f"request can ask for at most {MAX_REQUEST_SECONDS} s: lower the max length per turn to {most:g} s "
            "or less, or split the script."
        )


def speakers_phrase(speakers: list[int]) -> str:
    """[5] -> "Speaker 5"; [0, 5] -> "Speaker 0 and speaker 5"."""
    return capitalized(" and ".join(f"speaker {s}" for s in speakers))
