"""ModelConfig: one decoder, the Llama-3 / Llama-3.1 / Mistral families as data.

A ``ModelConfig`` is a frozen, hashable dataclass so that it can be a static
argument of jitted functions. ``from_hf`` reads a Hugging Face ``config.json``
(transformers 5 ``rope_parameters`` layout and the older ``rope_theta`` /
``rope_scaling`` layout); ``to_hf`` writes one that ``transformers`` loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "xla", "blocked", "cudnn")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")
# model_type -> architecture class name written to config.json
FAMILIES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "mixtral": "MixtralForCausalLM"}
# model_type -> architecture of a reward model: a sequence classifier with one label
REWARD_FAMILIES = {"llama": "LlamaForSequenceClassification",
                   "mistral": "MistralForSequenceClassification",
                   "mixtral": "MixtralForSequenceClassification"}


class ConfigError(ValueError):
    """A model configuration that medjax cannot honour (names the file and field)."""


def read_json(path: str, missing: str) -> dict:
    """A JSON file; a missing file or invalid JSON is one error naming the file (and line)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file ({missing})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def hf_num_labels(hf: dict[str, Any]) -> int:
    """Labels of a Hugging Face classifier config, as transformers counts them (``id2label``,
    else ``num_labels``, else its default of 2)."""
    if hf.get("id2label"):
        return len(hf["id2label"])
    return int(hf.get("num_labels", 2))


def hf_head(hf: dict[str, Any]) -> str:
    """``"reward"`` for a reward model's ``config.json`` (a sequence classifier), else ``"lm"``."""
    archs = hf.get("architectures") or []
    return "reward" if any(a in REWARD_FAMILIES.values() for a in archs) else "lm"


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3.1 ("llama3" rope type) frequency scaling."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None
    tie_embeddings: bool = False
    max_position_embeddings: int = 8192
    family: str = "llama"  # Hugging Face model_type: "llama", "mistral" or "mixtral"
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    # Mixture of experts (Mixtral): 0 experts = a dense MLP in every layer.
    num_experts: int = 0
    experts_per_token: int = 2
    router_aux_loss_coef: float = 0.0  # the load-balancing loss's weight (HF config.json's)
    router_jitter: float = 0.0  # multiplicative noise on the MoE input in training
    # Numerics and execution.
    moe_impl: str = "grouped"  # grouped (sorted tokens, ragged_dot) | dense (one-hot, tests)
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype of activations and matmuls
    # "xla": jax.nn.dot_product_attention, dense [t, t] scores (any platform); "blocked": the
    # same in query blocks that skip the key blocks the causal mask (and sliding window) rule
    # out (exact, fastest on CPU); "cudnn": fused (GPU); "auto": blocked on CPU, else xla
    attention: str = "auto"
    remat_policy: str = "none"
    scan_layers: bool = True
    # Low-rank adapters (medjax.models.lora.LoraConfig) trained over this frozen model; not
    # part of the architecture (to_hf ignores it; a merged export has none).
    lora: Any = None

    def __post_init__(self):
        def bad(field, msg):
            raise ConfigError(f"ModelConfig.{field}: {msg}")

        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                  "num_heads", "num_kv_heads", "head_dim"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v <= 0:
                bad(f, f"must be a positive integer, got {v!r}")
        if self.num_heads % self.num_kv_heads:
            bad("num_kv_heads", f"{self.num_kv_heads} does not divide num_heads={self.num_heads}")
        if self.param_dtype not in DTYPES:
            bad("param_dtype", f"{self.param_dtype!r} is not one of {DTYPES}")
        if self.dtype not in DTYPES:
            bad("dtype", f"{self.dtype!r} is not one of {DTYPES}")
        if self.attention not in ATTENTION_BACKENDS:
            bad("attention", f"{self.attention!r} is not one of {ATTENTION_BACKENDS}")
        if self.remat_policy not in REMAT_POLICIES:
            bad("remat_policy", f"{self.remat_policy!r} is not one of {REMAT_POLICIES}")
        if self.family not in FAMILIES:
            bad("family", f"{self.family!r} is not one of {tuple(FAMILIES)}")
        if not isinstance(self.num_experts, (int, np.integer)) or self.num_experts < 0:
            bad("num_experts", f"must be a non-negative integer, got {self.num_experts!r}")
        if (self.family == "mixtral") != (self.num_experts > 0):
            bad("num_experts", f"{self.num_experts} with family {self.family!r}: Mixtral has "
                "experts (num_experts > 0), Llama and Mistral have none")
        if self.num_experts and not 1 <= self.experts_per_token <= self.num_experts:
            bad("experts_per_token", f"{self.experts_per_token} is not in 1..num_experts="
                f"{self.num_experts}")
        if not 0.0 <= self.router_jitter < 1.0:
            bad("router_jitter", f"{self.router_jitter} is not in [0, 1)")
        if self.router_aux_loss_coef < 0:
            bad("router_aux_loss_coef", f"{self.router_aux_loss_coef} is negative")
        from .moe import MOE_IMPLS
        if self.moe_impl not in MOE_IMPLS:
            bad("moe_impl", f"{self.moe_impl!r} is not one of {MOE_IMPLS}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            bad("sliding_window", f"must be positive or None, got {self.sliding_window}")
        if self.head_dim % 2:
            bad("head_dim", f"must be even for rotary embeddings, got {self.head_dim}")
        if isinstance(self.rope_scaling, dict):  # accept a plain dict (e.g. from JSON)
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        if isinstance(self.lora, dict):
            from .lora import LoraConfig
            object.__setattr__(self, "lora", LoraConfig(**self.lora))
        if isinstance(self.eos_token_id, (list, int)):
            eos = [self.eos_token_id] if isinstance(self.eos_token_id, int) else self.eos_token_id
            object.__setattr__(self, "eos_token_id", tuple(eos))

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        d, f, v, l = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        n, k, h = self.num_heads, self.num_kv_heads, self.head_dim
        mlp = 3 * d * f * self.num_experts + d * self.num_experts if self.num_experts \
            else 3 * d * f
        per_layer = d * h * (2 * n + 2 * k) + mlp + 2 * d
        return v * d * (1 if self.tie_embeddings else 2) + l * per_layer + d

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["eos_token_id"] = list(self.eos_token_id)
        if self.lora is not None:
            out["lora"]["targets"] = list(self.lora.targets)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"ModelConfig: unknown fields {sorted(unknown)}")
        return cls(**d)

    # ------------------------------------------------------- Hugging Face I/O
    @classmethod
    def from_hf(cls, hf: dict[str, Any] | str | os.PathLike, **overrides) -> "ModelConfig":
        """Builds a ModelConfig from a Hugging Face ``config.json`` (dict or path).

        Fields that change the model's math and that medjax does not implement
        raise ``ConfigError`` naming the file and field; fields that do not
        matter for the math are ignored, and unrecognised ones are logged.
        """
        source = "config.json"
        if not isinstance(hf, dict):
            source = os.fspath(hf)
            hf = read_json(source, "a Hugging Face model directory needs config.json")

        def bad(field, msg):
            raise ConfigError(f"{source}: field '{field}': {msg}")

        model_type = hf.get("model_type")
        if model_type not in FAMILIES:
            bad("model_type", f"unsupported architecture {model_type!r}; medjax supports "
                f"{sorted(FAMILIES)}")
        archs = hf.get("architectures") or []
        known = (FAMILIES[model_type], REWARD_FAMILIES[model_type])
        for a in archs:
            if a not in known:
                bad("architectures", f"unsupported architecture {a!r} (expected "
                    f"{known[0]!r}, or {known[1]!r} for a reward model)")
        if known[1] in archs:
            labels = hf_num_labels(hf)
            if labels != 1:
                bad("id2label", f"{known[1]} with {labels} labels: medjax reads it as a reward "
                    "model, which has one label (num_labels=1)")
        for field in ("vocab_size", "hidden_size", "intermediate_size",
                      "num_hidden_layers", "num_attention_heads"):
            if not isinstance(hf.get(field), int):
                bad(field, f"missing or not an integer: {hf.get(field)!r}")

        act = hf.get("hidden_act", "silu")
        if act != "silu":
            bad("hidden_act", f"{act!r} is not supported (only 'silu')")
        for field in ("attention_bias", "mlp_bias"):
            if hf.get(field):
                bad(field, "biases in projections are not supported")
        for field in ("num_local_experts", "num_experts"):
            if hf.get(field) and model_type != "mixtral":
                bad(field, f"mixture-of-experts layers in a {model_type!r} model (medjax reads "
                    "them as model_type 'mixtral')")
        moe = {}
        if model_type == "mixtral":
            experts, per_token = hf.get("num_local_experts"), hf.get("num_experts_per_tok", 2)
            if not isinstance(experts, int) or experts < 1:
                bad("num_local_experts", f"missing or not a positive integer: {experts!r}")
            if not isinstance(per_token, int) or not 1 <= per_token <= experts:
                bad("num_experts_per_tok", f"{per_token!r} is not in 1..{experts}")
            moe = dict(num_experts=experts, experts_per_token=per_token,
                       router_aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.001)),
                       router_jitter=float(hf.get("router_jitter_noise", 0.0) or 0.0))
        if hf.get("layer_types") and len(set(hf["layer_types"])) > 1:
            bad("layer_types", f"mixed layer types {sorted(set(hf['layer_types']))} are not supported")
        for field in ("attention_dropout",):
            if hf.get(field):
                log.warning("%s: %s=%s is ignored (medjax applies no attention dropout)",
                            source, field, hf[field])

        heads = hf["num_attention_heads"]
        kv_heads = hf.get("num_key_value_heads") or heads
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads

        # RoPE: transformers 5 keeps it in rope_parameters; older configs use
        # rope_theta + rope_scaling. Read whichever is present.
        rope = hf.get("rope_parameters")
        rope_field = "rope_parameters"
        if rope is None:
            rope = dict(hf.get("rope_scaling") or {})
            rope_field = "rope_scaling"
            if "rope_theta" in hf:
                rope["rope_theta"] = hf["rope_theta"]
        if not isinstance(rope, dict):
            bad(rope_field, f"expected a mapping, got {type(rope).__name__}")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling = None
        if rope_type == "llama3":
            try:
                scaling = RopeScaling(
                    factor=float(rope["factor"]),
                    low_freq_factor=float(rope["low_freq_factor"]),
                    high_freq_factor=float(rope["high_freq_factor"]),
                    original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
                )
            except KeyError as e:
                bad(f"{rope_field}.{e.args[0]}", "required for rope_type 'llama3'")
        elif rope_type != "default":
            bad(f"{rope_field}.rope_type", f"rope type {rope_type!r} is not implemented "
                "(medjax implements 'default' and 'llama3')")
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            bad(f"{rope_field}.partial_rotary_factor", "partial rotary embeddings are not supported")

        sliding = hf.get("sliding_window")
        if model_type == "llama" and sliding:
            bad("sliding_window", "Llama configs do not use a sliding window")
        eos = hf.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)

        kw = dict(
            family=model_type,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=scaling,
            sliding_window=sliding or None,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
            **moe,
        )
        kw.update(overrides)
        try:
            return cls(**kw)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf(self, torch_dtype: str | None = None) -> dict[str, Any]:
        """A ``config.json`` dict for LlamaForCausalLM / MistralForCausalLM.

        RoPE settings use the layout both transformers 4 and 5 read
        (``rope_theta`` + ``rope_scaling``).
        """
        rope_scaling = None
        if self.rope_scaling is not None:
            rope_scaling = dict(rope_type="llama3", **dataclasses.asdict(self.rope_scaling))
        eos = list(self.eos_token_id)
        out = {
            "architectures": [FAMILIES[self.family]],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
            "torch_dtype": torch_dtype or self.param_dtype,
        }
        if self.family == "llama":
            out.update(attention_bias=False, mlp_bias=False)
        else:
            out["sliding_window"] = self.sliding_window
        if self.family == "mixtral":
            out.update(num_local_experts=self.num_experts,
                       num_experts_per_tok=self.experts_per_token,
                       router_aux_loss_coef=self.router_aux_loss_coef,
                       router_jitter_noise=self.router_jitter, output_router_logits=False)
        return out
