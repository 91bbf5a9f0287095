"""Models: one decoder (Llama-3, Llama-3.1, Mistral as configuration), HF interop, and one
loader (``load``) for HF directories, medjax model checkpoints and training workdirs."""

from .config import ConfigError, ModelConfig, RopeScaling
from .decoder import (HEADS, abstract_params, forward, forward_hidden, head_of, init_params,
                      lm_head_kernel, param_logical_axes, param_shardings, segments_at_most)
from .presets import PRESETS, get_preset

__all__ = [
    "ConfigError", "ModelConfig", "RopeScaling", "PRESETS", "get_preset", "HEADS",
    "abstract_params", "forward", "forward_hidden", "head_of", "init_params", "lm_head_kernel",
    "param_logical_axes", "param_shardings", "segments_at_most",
]

from .hf import CheckpointError, load_hf, save_hf  # noqa: E402
from .load import Model, describe, load, source_kind  # noqa: E402

__all__ += ["CheckpointError", "load_hf", "save_hf", "Model", "describe", "load", "source_kind"]
