"""CSM Studio: the web app and API around the `csm` engine.

inputs     limits, and parsing of what a user types (lines, scripts, settings, speaker ids)
clips      reading and checking a voice clip, header first (on upload, and again before generating)
cleanup    a clip's clean-up: silent ends trimmed, a long voice cut at pauses, loudness set, clipping found
presets    the preset voices (shipped clips, and sesame/csm-1b's prompts when reachable)
jobs       one request's turns, generated in order on the device (the @spaces.GPU function)
watermark  AudioSeal: every chunk marked as it is generated; the detector behind "Check a clip"
asr        automatic transcription with Whisper, loaded on first use (tiny_whisper: its offline random stand-in)
service    the Studio: the loaded model, jobs -> files and reports, detection
requests   the Studio's other half: requests -> jobs, every voice, clip and line checked first
report     what a finished request says: its files, turns and one summary of warnings
outputs    output folders and files, named by what they hold
stops      Stop: one flag per browser session, read by the running job
api        the named endpoints /generate, /generate_script, /transcribe and /detect
guard      what protects the server as a whole: body sizes, abandoned uploads, sessions
errors     how failures reach people
ui/        the page: one builder per panel, and one place that wires the events
cli        command-line options and start-up checks
"""
