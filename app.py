"""CSM Studio: a web demo and API for Sesame's CSM-1B conversational speech model (the Space's entry point).

    python app.py                    # sesame/csm-1b (gated: accept its terms, set HF_TOKEN)
    python app.py --model tiny       # offline, on a tiny random model: the UI works, the audio is noise
    python app.py --model ./folder   # a local checkpoint folder, or another Hub repo id

The app lives in studio/ (see its __init__ for where each concern is), the engine in csm/.
"""

from __future__ import annotations

# isort: off
import spaces  # noqa: F401  first: on ZeroGPU it must patch torch before anything touches CUDA
# isort: on

import logging
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from studio.cli import parse_args, start_studio
from studio.guard import SESSION_CAPACITY, BodyLimit, start_upload_sweeper
from studio.inputs import MAX_UPLOAD
from studio.ratings import RatingLog
from studio.ui import build_app
from studio.ui.style import CSS


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    studio = start_studio(args)
    demo = build_app(studio, queue_size=args.queue_size, ratings=RatingLog(args.ratings_dir, args.ratings_dataset))
    start_upload_sweeper(Path(get_upload_folder()))
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(preset.path) for preset in studio.presets.shipped],  # the clips, not the folder
        max_file_size=MAX_UPLOAD,
        state_session_capacity=SESSION_CAPACITY,
        app_kwargs={"middleware": [Middleware(BodyLimit)]},
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="pink"),
        css=CSS,
    )


if __name__ == "__main__":
    main()
