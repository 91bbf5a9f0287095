"""Models: one decoder (Llama-3, Llama-3.1, Mistral as configuration) and HF interop."""

from .config import ConfigError, ModelConfig, RopeScaling
from .decoder import (HEADS, abstract_params, forward, forward_hidden, head_of, init_params,
                      lm_head_kernel, param_logical_axes, param_shardings)
from .presets import PRESETS, get_preset

__all__ = [
    "ConfigError", "ModelConfig", "RopeScaling", "PRESETS", "get_preset", "HEADS",
    "abstract_params", "forward", "forward_hidden", "head_of", "init_params", "lm_head_kernel",
    "param_logical_axes", "param_shardings",
]

from .hf import CheckpointError, load_hf, save_hf  # noqa: E402

__all__ += ["CheckpointError", "load_hf", "save_hf"]
