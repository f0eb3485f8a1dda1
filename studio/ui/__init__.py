"""The page: `build_app(studio)` lays out the panels and wires them; the Studio does all the work."""

from __future__ import annotations

import gradio as gr

from studio.api import api_endpoints
from studio.library import STORAGE_KEY, STORAGE_SECRET
from studio.outputs import OUTPUT_TTL_S
from studio.ratings import RatingLog
from studio.service import Studio
from studio.session_api import reproduce_endpoint
from studio.space_api import infer_endpoint
from studio.ui.check import check_panel
from studio.ui.compose import compose_panel
from studio.ui.conversation import conversation_panel
from studio.ui.events import Page
from studio.ui.result import result_panel
from studio.ui.share import share_panel
from studio.ui.style import INTRO, SHOWN_CARDS
from studio.ui.turns import show_turns
from studio.ui.voices import default_voice, my_voices_panel, speaker_choices, voices_panel

DEFAULT_QUEUE_SIZE = 16


def build_app(studio: Studio, queue_size: int = DEFAULT_QUEUE_SIZE, ratings: RatingLog | None = None) -> gr.Blocks:
    """The page and the API over `studio`; ratings go to `ratings` (by default ./ratings/ratings.csv)."""
    banner, kind = studio.banner()
    picks = [default_voice(studio.presets, speaker) for speaker in range(SHOWN_CARDS)]
    names = speaker_choices(studio.presets, picks)
    with gr.Blocks(title="CSM Studio", delete_cache=(1800, OUTPUT_TTL_S)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(banner, visible=bool(banner), elem_id="status-banner", elem_classes=[f"banner-{kind or 'none'}"])
        turns_state = gr.State([])  # the conversation so far, oldest first (see new_turn)
        last_result = gr.State({})  # the last result's turns and takes (studio/ui/turns.py)
        library = gr.BrowserState([], storage_key=STORAGE_KEY, secret=STORAGE_SECRET)  # studio/library.py
        pages = []  # the Page, once built: the rows shown later (turns, takes) are wired by it
        with gr.Tabs():
            with gr.Tab("Generate"), gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    cards, add_speaker, remove_speaker = voices_panel(studio)
                    my_voices = my_voices_panel(library)
                    conversation = conversation_panel(turns_state, names, lambda: pages[0].turn_voice_event)
                    compose = compose_panel(names, can_generate=studio.can_generate)
                with gr.Column(scale=2):
                    result = result_panel(names)
                    gr.render(inputs=last_result)(lambda state: show_turns(state, pages[0]))
                    share = share_panel()
            with gr.Tab("Check a clip"):
                check = check_panel()
        api_endpoints(studio)
        infer_endpoint(studio)  # the official Space's /infer
        reproduce_endpoint(studio)  # /reproduce: a saved session generated again and compared
        page = Page(studio, cards, (add_speaker, remove_speaker), compose, (turns_state, last_result), conversation,
                    result, check, my_voices, ratings or RatingLog(), share)  # fmt: skip
        pages.append(page)
        page.wire(demo)
    demo.queue(max_size=queue_size, default_concurrency_limit=4)
    return demo
