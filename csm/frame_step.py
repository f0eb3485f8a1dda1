"""The decode step after the prefill: one audio frame in, the next frame out, with static shapes.

Every step of a pass has the same shapes (one frame of `N + 1` columns per take, text column masked
out), so on CUDA the whole step (backbone step, the N-1 depth-decoder steps and all the sampling) is
captured once per number of takes (and sampling settings) in a CUDA graph and replayed: one launch
per frame instead of hundreds. Elsewhere, and when
capture is switched off, the same `Model.generate_frame` runs eagerly on the same buffers.
If capture fails (a driver, memory, a worker that does not allow it), the step logs one line and
runs eagerly from then on: a request must never fail because an optimisation did.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict

import torch
from torch import Tensor

from csm.models import Model

log = logging.getLogger("csm")


class FrameStep:
    """`step(frame [B, N], position [1, 1]) -> next frame [B, N]`, replayed from a CUDA graph on CUDA.

    B is the number of takes (rows of the KV cache); each B has its own static inputs and graphs.
    """

    MAX_GRAPHS = 8  # one graph per (rows, temperature, top-k); each holds a small private memory pool

    def __init__(self, model: Model, use_cuda_graph: bool | None = None):
        self.model = model
        self.use_cuda_graph = model.device.type == "cuda" if use_cuda_graph is None else use_cuda_graph
        # Static inputs per batch size: a graph reads these exact tensors, so each step copies into them.
        self.inputs: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self.graphs: OrderedDict[tuple[int, float, int], tuple[torch.cuda.CUDAGraph, Tensor]] = OrderedDict()
        self._captured_caches: weakref.ref | None = None  # the caches the graphs read

    def _inputs(self, rows: int) -> tuple[Tensor, Tensor, Tensor]:
        """tokens [rows, 1, N+1], mask (the same shape) and position [rows, 1] for `rows` takes."""
        if rows not in self.inputs:
            n, device = self.model.num_codebooks, self.model.device
            tokens = torch.zeros(rows, 1, n + 1, dtype=torch.long, device=device)
            mask = torch.ones(rows, 1, n + 1, dtype=torch.bool, device=device)
            mask[..., -1] = False  # generated frames carry no text
            self.inputs[rows] = tokens, mask, torch.zeros(rows, 1, dtype=torch.long, device=device)
        return self.inputs[rows]

    def _drop_stale_graphs(self) -> None:
        # A graph reads the very caches it was captured with; once they are set up anew (say, with
        # more rows for takes), its replays would read freed memory.
        caches = self.model.backbone.layers[0].attn.kv_cache
        if self._captured_caches is None or self._captured_caches() is not caches:
            self.graphs.clear()
            self._captured_caches = weakref.ref(caches)

    def prepare(self, temperature: float, topk: int, rows: int = 1) -> None:
        """Capture the graph for these settings and rows if needed. It writes the caches: call before the prefill.

        The RNG state is left as it was, so a seeded generation samples the same codes whether or not
        this call captured (or failed to capture) a graph.
        """
        self._drop_stale_graphs()
        key = (rows, temperature, topk)
        if not self.use_cuda_graph or key in self.graphs:
            return
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        main_stream = torch.cuda.current_stream() if devices else None
        with torch.random.fork_rng(devices=devices):
            try:
                self.graphs[key] = self._capture(rows, temperature, topk)
            except Exception as error:  # any failure: eager is slower, but the request goes on
                self._give_up_capture(error, main_stream)
            finally:
                self.model.reset_caches()  # warm-up and capture wrote them
        if len(self.graphs) > self.MAX_GRAPHS:
            self.graphs.popitem(last=False)

    def _capture(self, rows: int, temperature: float, topk: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        model, inputs = self.model, self._inputs(rows)
        # Warm up on a side stream (lazy init, cuBLAS workspaces) as CUDA graph capture requires.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                model.generate_frame(*inputs, temperature, topk)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = model.generate_frame(*inputs, temperature, topk)
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
        rows = frame.shape[0]
        tokens, mask, static_position = self._inputs(rows)
        tokens[:, 0, :-1].copy_(frame)
        static_position.copy_(position)  # [1, 1] -> every row: the takes advance together
        key = (rows, temperature, topk)
        captured = self.graphs.get(key)
        if captured is None:
            return self.model.generate_frame(tokens, mask, static_position, temperature, topk)
        graph, output = captured
        self.graphs.move_to_end(key)
        graph.replay()
        return output.clone()  # the next replay overwrites `output`
