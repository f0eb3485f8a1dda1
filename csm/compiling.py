"""CPU, opt-in: the depth decoder's step compiled by inductor, about 10 % faster bf16 frames than eager.

A frame runs the depth decoder 31 times, and between its weight products sit dozens of small ops
(norms, rope, residual adds, SiLU) whose dispatch costs about a sixth of the frame (bench/RESULTS.md).
Inductor fuses them into C++ loops, and with its C++ wrapper a step is one call instead of a Python
graph. The products stay oneDNN's, on csm.packing's packed weights: with freezing, inductor takes
them as constants as they are, so no second copy of the weights is made (about 0.1 GB more in all).

Why opt-in (`load_model(..., compile_decoder=True)`): the fused ops round differently, so its codes
differ from eager's for the same seed (a session records which made it); it needs a C++ compiler at
run time; and compiling takes 10 to 30 s at load, and again the first time each number of takes is
asked for. If compiling or running the compiled step fails, for any reason, the step runs eagerly
from then on, with one log line: the model is then the default one.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from csm.models import Model

log = logging.getLogger("csm")

# freezing: the weights are constants (inductor lowers oneDNN's packed products only so); cpp_wrapper: one
# C++ call per step.
INDUCTOR_OPTIONS = {"freezing": True, "cpp_wrapper": True}
# One compiled graph per (takes, first step or not, cache rows): 1 to 4 takes make up to 10 of them.
RECOMPILE_LIMIT = 16


class CompiledDecoderStep:
    """`step(inputs [B, S, D], positions [B, S]) -> [B, D_dec]`: `Model.decoder_step`, compiled.

    Installed as the model's `decoder_step`. The decoder attends over its whole 32-slot cache (masked),
    which keeps every step's shapes static; eager CPU steps attend over the written slots only.
    """

    def __init__(self, model: Model):
        self.model = model
        self.compiled = torch.compile(Model.decoder_step.__get__(model), dynamic=False, fullgraph=True)
        self.failed = False

    def __call__(self, inputs: Tensor, positions: Tensor) -> Tensor:
        if not self.failed:
            try:
                with torch._inductor.config.patch(INDUCTOR_OPTIONS):  # read when a new shape compiles
                    return self.compiled(inputs, positions)
            except Exception as error:  # any failure: eager is slower, but the request goes on
                self.give_up(error)
        # Rerunning the step eagerly is safe: it writes the same cache slots with what they should hold.
        return Model.decoder_step(self.model, inputs, positions)

    def give_up(self, error: Exception) -> None:
        """From now on the model is the default one: eager steps, attending over the written slots only."""
        log.warning("Compiling the depth decoder's step failed (%s: %s); it runs eagerly from now on",
                    type(error).__name__, str(error).strip().splitlines()[0][:300] if str(error).strip() else "")  # fmt: skip
        self.failed = True
        self.model.decoder.attend_written_only = True
        del self.model.decoder_step  # the model's own method again


def check_compile_decoder(device: torch.device, dtype: torch.dtype, quantize: str | None) -> None:
    """Raise ValueError where compiling the decoder step does not apply (before any weight is read)."""
    if device.type != "cpu":
        raise ValueError(f"compiling the decoder step is for the CPU, not {device.type} (CUDA replays graphs)")
    if quantize:
        raise ValueError(f"compiling the decoder step is for float weights, not {quantize} ones")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(
            f"compiling the decoder step is for float32 or bfloat16, not {str(dtype).removeprefix('torch.')}"
        )


def compile_decoder(model: Model) -> bool:
    """Install the compiled decoder step on a CPU model and compile it now for one take (both shapes: the
    first step's two positions and the later steps' one). Returns whether it compiled; if not, the model is
    left as it was (see CompiledDecoderStep.give_up)."""
    import torch._dynamo.config  # here, not at the top: importing them takes a second or two
    import torch._inductor.config

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    model.decoder.attend_written_only = False
    step = model.decoder_step = CompiledDecoderStep(model)
    width = model.config.backbone.embed_dim
    model.setup_caches(1)
    with torch.inference_mode():
        step(torch.zeros(1, 2, width, dtype=model.dtype), torch.arange(2).view(1, 2))
        if not step.failed:
            step(torch.zeros(1, 1, width, dtype=model.dtype), torch.tensor([[2]]))
    model.reset_caches()
    return not step.failed


def decoder_is_compiled(model: Model) -> bool:
    """Whether the model's decoder steps run compiled (and have not fallen back to eager)."""
    step = model.__dict__.get("decoder_step")
    return isinstance(step, CompiledDecoderStep) and not step.failed
