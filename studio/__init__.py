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
space_api  /infer: the official sesame/csm-1b Space's API, on the same Studio
session_api  /reproduce: a session bundle in, its turns generated again and compared out
bundle     a session as one .zip (manifest.json and its clips): written, and read back safely
manifest   the session manifest: its fields checked, and built from a finished run
sessions   Download session and Open session: a run and the page's additions as a bundle; a bundle as plain data
reproduce  a session generated again through the normal path, each turn compared sample by sample
guard      what protects the server as a whole: body sizes, abandoned uploads, sessions
errors     how failures reach people
ui/        the page: one builder per panel, and one place that wires the events
cli        command-line options and start-up checks
"""

__version__ = "0.1.0"  # said in saved sessions (studio/manifest.py), with the git commit when known
