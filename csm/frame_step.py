"""The decode step after the prefill: one audio frame in, the next frame out, with static shapes.

Every step has the same shapes (one frame of `N + 1` columns, text column masked out), so on CUDA
the whole step (backbone step, the N-1 depth-decoder steps and all the sampling) is captured once
in a CUDA graph and replayed: one launch per frame instead of hundreds. Elsewhere, and when
capture is switched off, the same `Model.generate_frame` runs eagerly on the same buffers.
If capture fails (a driver, memory, a worker that does not allow it), the step logs one line and
runs eagerly from then on: a request must never fail because an optimisation did.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import Tensor

from csm.models import Model

log = logging.getLogger("csm")


class FrameStep:
    """`step(frame [1, N], position [1, 1]) -> next frame [1, N]`, replayed from a CUDA graph on CUDA."""

    MAX_GRAPHS = 4  # one graph per (temperature, top-k); each holds a small private memory pool

    def __init__(self, model: Model, use_cuda_graph: bool | None = None):
        self.model = model
        self.use_cuda_graph = model.device.type == "cuda" if use_cuda_graph is None else use_cuda_graph
        n, device = model.num_codebooks, model.device
        # Static inputs: a graph reads these exact tensors, so each step copies into them.
        self.tokens = torch.zeros(1, 1, n + 1, dtype=torch.long, device=device)
        self.mask = torch.ones(1, 1, n + 1, dtype=torch.bool, device=device)
        self.mask[..., -1] = False  # generated frames carry no text
        self.position = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.graphs: OrderedDict[tuple[float, int], tuple[torch.cuda.CUDAGraph, Tensor]] = OrderedDict()

    def prepare(self, temperature: float, topk: int) -> None:
        """Capture the graph for these settings if needed. It writes the caches: call before the prefill.

        The RNG state is left as it was, so a seeded generation samples the same codes whether or not
        this call captured (or failed to capture) a graph.
        """
        if not self.use_cuda_graph or (temperature, topk) in self.graphs:
            return
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        main_stream = torch.cuda.current_stream() if devices else None
        with torch.random.fork_rng(devices=devices):
            try:
                self.graphs[(temperature, topk)] = self._capture(temperature, topk)
            except Exception as error:  # any failure: eager is slower, but the request goes on
                self._give_up_capture(error, main_stream)
            finally:
                self.model.reset_caches()  # warm-up and capture wrote them
        if len(self.graphs) > self.MAX_GRAPHS:
            self.graphs.popitem(last=False)

    def _capture(self, temperature: float, topk: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        model = self.model
        # Warm up on a side stream (lazy init, cuBLAS workspaces) as CUDA graph capture requires.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                model.generate_frame(self.tokens, self.mask, self.position, temperature, topk)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = model.generate_frame(self.tokens, self.mask, self.position, temperature, topk)
        return graph, output

    def _give_up_capture(self, error: Exception, main_stream) -> None:
        # Eager for every setting from now on: a device that failed to capture once may fail again.
        self.use_cuda_graph = False
        self.graphs.clear()
        log.warning("CUDA graph capture failed (%s: %s); the decode step runs eagerly from now on",
                    type(error).__name__, error)  # fmt: skip
        if main_stream is not None:
            # A capture that fails inside `torch.cuda.graph` can leave its side stream current.
            torch.cuda.set_stream(main_stream)
            try:
                torch.cuda.synchronize(self.model.device)
                torch.cuda.empty_cache()
            except RuntimeError:  # the eager steps will raise a clearer error if the device is lost
                pass

    def __call__(self, frame: Tensor, position: Tensor, temperature: float, topk: int) -> Tensor:
        self.tokens[:, 0, :-1].copy_(frame)
        self.position.copy_(position)
        captured = self.graphs.get((temperature, topk))
        if captured is None:
            return self.model.generate_frame(self.tokens, self.mask, self.position, temperature, topk)
        graph, output = captured
        self.graphs.move_to_end((temperature, topk))
        graph.replay()
        return output.clone()  # the next replay overwrites `output`
