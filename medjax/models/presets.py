"""Named model configurations: the published architectures and tiny CPU variants.

The full-size presets match the ``config.json`` of the public checkpoints
(Meta-Llama-3-8B / 70B, Llama-3.1-8B / 70B, Mistral-7B-v0.1). The tiny variants
keep each family's distinguishing feature (GQA, Llama-3.1 rope scaling, a
sliding window) at sizes that run in seconds on a laptop CPU.
"""

from __future__ import annotations

from .config import ModelConfig, RopeScaling

_LLAMA3_8B = dict(
    family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
    num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5,
    rope_theta=500000.0, max_position_embeddings=8192, bos_token_id=128000,
    eos_token_id=(128001,),
)
_LLAMA3_70B = dict(_LLAMA3_8B, hidden_size=8192, intermediate_size=28672, num_layers=80,
                   num_heads=64)
_LLAMA31_SCALING = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position_embeddings=8192)
_MISTRAL_7B = dict(
    family="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
    num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5,
    rope_theta=10000.0, max_position_embeddings=32768, sliding_window=4096,
    bos_token_id=1, eos_token_id=(2,),
)
# Mixtral-8x7B (Medico-Mistral's base): Mistral's attention without a window, 8 SwiGLU
# experts per layer, 2 per token.
_MIXTRAL_8X7B = dict(_MISTRAL_7B, family="mixtral", rope_theta=1e6, sliding_window=None,
                     num_experts=8, experts_per_token=2, router_aux_loss_coef=0.02)
_TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
             num_heads=4, num_kv_heads=2, head_dim=16)

PRESETS: dict[str, dict] = {
    "llama3_8b": _LLAMA3_8B,
    "llama3_70b": _LLAMA3_70B,
    "llama31_8b": dict(_LLAMA3_8B, rope_scaling=_LLAMA31_SCALING, max_position_embeddings=131072),
    "llama31_70b": dict(_LLAMA3_70B, rope_scaling=_LLAMA31_SCALING, max_position_embeddings=131072),
    "mistral_7b": _MISTRAL_7B,
    # Tiny CPU variants (same families, toy sizes).
    "llama3_tiny": dict(_LLAMA3_8B, **_TINY, max_position_embeddings=2048,
                        bos_token_id=1, eos_token_id=(2,)),
    "llama31_tiny": dict(_LLAMA3_8B, **_TINY, bos_token_id=1, eos_token_id=(2,),
                         rope_scaling=RopeScaling(8.0, 1.0, 4.0, 32),
                         max_position_embeddings=256),
    "mistral_tiny": dict(_MISTRAL_7B, **_TINY, sliding_window=16, max_position_embeddings=2048),
    "mixtral_8x7b": _MIXTRAL_8X7B,
    "mixtral_tiny": dict(_MIXTRAL_8X7B, **_TINY, num_experts=4, max_position_embeddings=2048),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """Returns the named preset, with dataclass field overrides applied."""
    if name not in PRESETS:
        raise ValueError(f"model.preset={name!r}: unknown; known presets: {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
