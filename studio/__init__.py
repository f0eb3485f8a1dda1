"""CSM Studio: the web app and API around the `csm` engine.

inputs    limits, and parsing of what a user types (lines, scripts, settings, speaker ids)
clips     reading and checking a voice clip (on upload, and again before generating)
presets   the preset voices (shipped clips, and sesame/csm-1b's prompts when reachable)
jobs      one request's turns, generated in order on the device (the @spaces.GPU function)
service   the Studio: the loaded model, requests -> jobs -> files and reports, stop
api       the named endpoints /generate and /generate_script
ui/       the page: one builder per panel, and one place that wires the events
cli       command-line options and start-up checks
"""
