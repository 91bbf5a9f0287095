"""Low-rank adapters (LoRA) on the one decoder, and the PEFT adapter format.

An adapter on a projection ``W`` (input ``x``) adds ``scale * dropout(x) @ A @ B`` to its
output, with ``A [in, r]`` (random at start) and ``B [r, out]`` (zero at start), so a new
adapter leaves the model's outputs exactly as they were; ``scale = alpha / r`` (``alpha /
sqrt(r)`` with rsLoRA). medjax's 3-D projections are flattened, never sliced per head:
q/k/v ``[d, heads, head_dim]`` take ``A [d, r]`` and ``B [r, heads * head_dim]``, o_proj
``[heads, head_dim, d]`` takes ``A [heads * head_dim, r]``, ``B [r, d]``.

The adapters are their own pytree, stacked over layers like the base::

    {"layers": {"attn": {"lora": {"q_proj": {"a": [L, d, r], "b": [L, r, n*h]}, ...}},
                "mlp":  {"lora": {"gate_proj": {...}, ...}}}}

``attach(base, trainable)`` lays them over the frozen base parameters (a new dict, no
array copied); the decoder's modules add an adapter's output wherever one is present.
The trainable tree may also carry whole parameters that train with the adapters (a
reward model's new ``reward_head``, as PEFT's ``modules_to_save``). ``merge`` folds the
adapters into the weights (exports, generation and evaluation of a LoRA run).

PEFT: ``adapter_config.json`` + ``adapter_model.safetensors`` with
``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [r, in]`` and
``...lora_B.weight [out, r]`` (``A.T`` and ``B.T`` of medjax's per-layer arrays).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# medjax projection -> (module, input logical axis, output logical axis, HF module)
PROJECTIONS = {
    "q_proj": ("attn", "embed", "heads", "self_attn"),
    "k_proj": ("attn", "embed", "kv_heads", "self_attn"),
    "v_proj": ("attn", "embed", "kv_heads", "self_attn"),
    "o_proj": ("attn", "heads", "embed", "self_attn"),
    "gate_proj": ("mlp", "embed", "mlp", "mlp"),
    "up_proj": ("mlp", "embed", "mlp", "mlp"),
    "down_proj": ("mlp", "mlp", "embed", "mlp"),
}
SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
         "up": "up_proj", "down": "down_proj"}
ALL = tuple(PROJECTIONS)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


class LoraError(ValueError):
    """A LoRA setting or adapter file medjax cannot use (names the key or file)."""


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False
    targets: tuple[str, ...] = ALL  # medjax projection names, in PROJECTIONS order

    def __post_init__(self):
        if isinstance(self.targets, (list, str)):
            object.__setattr__(self, "targets", resolve_targets(self.targets))
        if not isinstance(self.rank, (int, np.integer)) or self.rank < 1:
            raise LoraError(f"model.lora.rank={self.rank!r}: a positive integer (0 turns LoRA "
                            "off)")
        if not self.alpha > 0:
            raise LoraError(f"model.lora.alpha={self.alpha!r}: must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise LoraError(f"model.lora.dropout={self.dropout!r}: a probability in [0, 1)")
        if not self.targets:
            raise LoraError("model.lora.targets: no projection selected")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


def resolve_targets(spec) -> tuple[str, ...]:
    """``model.lora.targets`` -> medjax projection names. Comma-separated entries, each a
    short name (q, k, v, o, gate, up, down), a projection name (q_proj, ...), ``all`` /
    ``all-linear``, or a regular expression searched in the parameter paths
    (``layers/attn/q_proj``, ``layers/mlp/down_proj``, ...)."""
    entries = [e.strip() for e in (spec.split(",") if isinstance(spec, str) else spec)]
    chosen: set[str] = set()
    for e in filter(None, entries):
        if e in ("all", "all-linear", "all_linear"):
            chosen.update(ALL)
        elif e in SHORT or e in PROJECTIONS:
            chosen.add(SHORT.get(e, e))
        else:
            try:
                pattern = re.compile(e)
            except re.error as err:
                raise LoraError(f"model.lora.targets: {e!r} is neither a projection ("
                                f"{', '.join(SHORT)}) nor a valid pattern ({err})") from None
            hits = [p for p, (m, *_) in PROJECTIONS.items()
                    if pattern.search(f"layers/{m}/{p}")]
            if not hits:
                raise LoraError(f"model.lora.targets: {e!r} matches no projection (paths are "
                                "layers/attn/{q,k,v,o}_proj and layers/mlp/{gate,up,down}_proj; "
                                "embeddings and the LM head take no adapter)")
            chosen.update(hits)
    return tuple(p for p in ALL if p in chosen)


def from_settings(lora) -> LoraConfig | None:
    """The ``model.lora`` section of a training config (rank 0: no LoRA)."""
    if lora is None or not lora.get("rank", 0):
        return None
    return LoraConfig(rank=int(lora.rank), alpha=float(lora.alpha), dropout=float(lora.dropout),
                      rslora=bool(lora.rslora), targets=lora.targets)


# ------------------------------------------------------------------ shapes
def _dims(config, name: str) -> tuple[int, int]:
    d, f = config.hidden_size, config.intermediate_size
    size = {"embed": d, "heads": config.num_heads * config.head_dim,
            "kv_heads": config.num_kv_heads * config.head_dim, "mlp": f}
    _, src, dst, _ = PROJECTIONS[name]
    return size[src], size[dst]


def _tree(config, leaf):
    out: dict = {"layers": {}}
    for name in config.lora.targets:
        module = PROJECTIONS[name][0]
        out["layers"].setdefault(module, {"lora": {}})["lora"][name] = leaf(name)
    return out


def abstract_adapters(config) -> dict:
    """ShapeDtypeStructs of the adapters (float32, whatever the base's dtype)."""
    L, r = config.num_layers, config.lora.rank

    def leaf(name):
        i, o = _dims(config, name)
        return {"a": jax.ShapeDtypeStruct((L, i, r), jnp.float32),
                "b": jax.ShapeDtypeStruct((L, r, o), jnp.float32)}
    return _tree(config, leaf)


def adapter_axes(config) -> dict:
    """Logical axes of the adapters: each follows its base projection's input / output."""
    def leaf(name):
        _, src, dst, _ = PROJECTIONS[name]
        return {"a": ("layers", src, None), "b": ("layers", None, dst)}
    return _tree(config, leaf)


def adapter_shardings(config, mesh) -> dict:
    from ..parallel.sharding import logical_to_sharding
    return logical_to_sharding(adapter_axes(config), mesh, shapes=abstract_adapters(config))


def init_adapters(config, rng: jax.Array, mesh=None) -> dict:
    """A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming-uniform with a = sqrt(5)), B = 0,
    born sharded on ``mesh``."""
    shapes = abstract_adapters(config)

    def make(rng):
        leaves, treedef = jax.tree.flatten(shapes)
        keys = jax.random.split(rng, len(leaves))
        out = []
        for k, s in zip(keys, leaves):
            if s.shape[1] == config.lora.rank:  # b [L, r, out]
                out.append(jnp.zeros(s.shape, s.dtype))
            else:
                bound = 1.0 / math.sqrt(s.shape[1])
                out.append(jax.random.uniform(k, s.shape, s.dtype, -bound, bound))
        return jax.tree.unflatten(treedef, out)

    shardings = adapter_shardings(config, mesh) if mesh is not None else None
    return jax.jit(make, out_shardings=shardings)(rng)


# ------------------------------------------------------------ attach, merge
def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(base[k], v) if isinstance(v, dict) and isinstance(
            base.get(k), dict) else v
    return out


def attach(base: dict, trainable: dict, rng: jax.Array | None = None,
           num_layers: int | None = None) -> dict:
    """The parameters the decoder runs: ``base`` with the trainable tree laid over it (no
    array copied). ``rng`` (training only) switches adapter dropout on: one key per layer
    in ``layers/lora_rng``."""
    params = _deep_merge(base, trainable)
    if rng is not None:
        n = num_layers or jax.tree.leaves(base["layers"])[0].shape[0]
        params["layers"] = dict(params["layers"], lora_rng=jax.random.split(rng, n))
    return params


def adapter_delta(module, name: str, x: jax.Array, rng, index: int):
    """``scale * dropout(x) @ A @ B`` of projection ``name`` in a decoder module (``x``
    ``[b, t, ...in]``), as ``[b * t, out]`` (``add_delta`` reshapes it to the projection's
    output); None where it has no adapter."""
    lora = module.config.lora
    if lora is None or not module.has_variable("params", "lora"):
        return None
    adapters = module.get_variable("params", "lora")
    if name not in adapters:
        return None
    a, b = adapters[name]["a"], adapters[name]["b"]
    # [tokens, in]: 2-D matmuls, as decoder.project (the gradients' too); as PEFT, in the
    # adapter's own dtype
    x = x.reshape(x.shape[0] * x.shape[1], -1).astype(a.dtype)
    if rng is not None and lora.dropout > 0:
        keep = jax.random.bernoulli(jax.random.fold_in(rng, index), 1.0 - lora.dropout,
                                    x.shape)
        x = jnp.where(keep, x / (1.0 - lora.dropout), 0.0).astype(a.dtype)
    return (x @ a) @ (b * lora.scale)


def add_delta(y: jax.Array, delta) -> jax.Array:
    """A projection's output plus its adapter's (reshaped to it, in the output's dtype)."""
    if delta is None:
        return y
    return y + delta.reshape(y.shape).astype(y.dtype)


def _base_shape(config, name: str) -> tuple[int, ...]:
    d, f = config.hidden_size, config.intermediate_size
    n, k, h = config.num_heads, config.num_kv_heads, config.head_dim
    return {"q_proj": (d, n, h), "k_proj": (d, k, h), "v_proj": (d, k, h),
            "o_proj": (n, h, d), "gate_proj": (d, f), "up_proj": (d, f),
            "down_proj": (f, d)}[name]


def merge(config, base: dict, trainable: dict) -> dict:
    """Parameters with the adapters folded in (``W + scale * A @ B``, computed in float32,
    stored in the base's dtype) and the trainable whole parameters in place. Runs under
    jit with the base's shardings (the merged weights replace the base's)."""
    lora = config.lora
    adapters = trainable.get("layers", {})
    rest = {k: v for k, v in trainable.items() if k != "layers"}

    def fn(base, adapters, rest):
        layers = {m: dict(v) for m, v in base["layers"].items()}
        for name in lora.targets:
            module = PROJECTIONS[name][0]
            ab = adapters[module]["lora"][name]
            w = layers[module][name]
            delta = jnp.einsum("lir,lro->lio", ab["a"], ab["b"]) * lora.scale
            layers[module][name] = (w.astype(jnp.float32) + delta.reshape(
                (config.num_layers,) + _base_shape(config, name))).astype(w.dtype)
        return dict(_deep_merge(base, rest), layers=layers)

    out_shardings = jax.tree.map(lambda x: x.sharding, _deep_merge(base, rest))
    return jax.jit(fn, out_shardings=out_shardings)(base, adapters, rest)


def split_trainable(params: dict) -> tuple[dict, dict]:
    """(base, adapters) of a tree that carries ``lora`` entries (the inverse of ``attach``
    for the adapters)."""
    layers = params["layers"]
    base_layers, adapters = {}, {}
    for k, v in layers.items():
        if k == "lora_rng":
            continue
        if isinstance(v, dict) and "lora" in v:
            adapters[k] = {"lora": v["lora"]}
            v = {kk: vv for kk, vv in v.items() if kk != "lora"}
        base_layers[k] = v
    return dict(params, layers=base_layers), {"layers": adapters}


# ------------------------------------------------------------------- PEFT
def peft_config(config, base_path: str | None, *, reward: bool = False) -> dict:
    lora = config.lora
    return {
        "peft_type": "LORA", "task_type": "SEQ_CLS" if reward else "CAUSAL_LM",
        "base_model_name_or_path": base_path, "r": lora.rank, "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout, "use_rslora": lora.rslora, "bias": "none",
        "target_modules": list(lora.targets), "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
        "alpha_pattern": {}, "use_dora": False, "revision": None,
    }


def save_peft(config, trainable: dict, path: str, base_path: str | None) -> list[str]:
    """Writes ``adapter_config.json`` and ``adapter_model.safetensors`` (float32) that
    ``peft.PeftModel.from_pretrained(base, path)`` loads. Returns the files written."""
    from safetensors.numpy import save_file
    if set(trainable) - {"layers"}:
        raise LoraError(f"--to=peft: the run also trains {sorted(set(trainable) - {'layers'})} "
                        "(a reward head): export the merged model with --to=hf")
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for name in config.lora.targets:
        module, _, _, hf_module = PROJECTIONS[name]
        ab = trainable["layers"][module]["lora"][name]
        a = np.asarray(jax.device_get(ab["a"]), np.float32)
        b = np.asarray(jax.device_get(ab["b"]), np.float32)
        for i in range(config.num_layers):
            key = f"{PEFT_PREFIX}model.layers.{i}.{hf_module}.{name}"
            tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
            tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
    files = [os.path.join(path, ADAPTER_WEIGHTS), os.path.join(path, ADAPTER_CONFIG)]
    save_file(tensors, files[0] + ".tmp", metadata={"format": "pt"})
    os.replace(files[0] + ".tmp", files[0])
    with open(files[1] + ".tmp", "w") as f:
        json.dump(peft_config(config, base_path), f, indent=2)
    os.replace(files[1] + ".tmp", files[1])
    return files


def is_peft_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def read_peft_config(path: str) -> tuple[LoraConfig, str | None]:
    """(LoraConfig, base_model_name_or_path) of a PEFT LoRA adapter directory; what medjax
    cannot reproduce is one error naming the file and field."""
    from .config import read_json
    file = os.path.join(path, ADAPTER_CONFIG)
    cfg = read_json(file, "a PEFT adapter directory needs adapter_config.json")

    def bad(field, msg):
        raise LoraError(f"{file}: field '{field}': {msg}")

    if cfg.get("peft_type") != "LORA":
        bad("peft_type", f"{cfg.get('peft_type')!r}: medjax reads LoRA adapters only")
    if cfg.get("task_type") not in (None, "CAUSAL_LM"):
        bad("task_type", f"{cfg.get('task_type')!r}: medjax reads CAUSAL_LM adapters")
    for field, ok in (("bias", cfg.get("bias", "none") == "none"),
                      ("use_dora", not cfg.get("use_dora")),
                      ("fan_in_fan_out", not cfg.get("fan_in_fan_out")),
                      ("modules_to_save", not cfg.get("modules_to_save")),
                      ("layers_to_transform", cfg.get("layers_to_transform") is None),
                      ("rank_pattern", not cfg.get("rank_pattern")),
                      ("alpha_pattern", not cfg.get("alpha_pattern")),
                      # PEFT options that change the forward pass (LoRA variants, a bias on B,
                      # repeated layers, trained token rows): read as plain LoRA, silently wrong
                      *((f, not cfg.get(f)) for f in (
                          "lora_bias", "layer_replication", "trainable_token_indices",
                          "target_parameters", "alora_invocation_tokens", "use_bdlora",
                          "arrow_config", "velora_config", "monteclora_config",
                          "kasa_config"))):
        if not ok:
            bad(field, f"{cfg.get(field)!r} is not supported")
    targets = cfg.get("target_modules")
    if isinstance(targets, str):  # PEFT: a regex over module names, or "all-linear"
        names = ALL if targets == "all-linear" else tuple(
            p for p in ALL if re.fullmatch(targets, f"model.layers.0.{PROJECTIONS[p][3]}.{p}")
            or re.fullmatch(targets, p))
    else:
        names = tuple(targets or ())
        unknown = [t for t in names if t not in PROJECTIONS]
        if unknown:
            bad("target_modules", f"{unknown} are not projections medjax adapts ({list(ALL)})")
    try:
        lora = LoraConfig(rank=int(cfg["r"]), alpha=float(cfg.get("lora_alpha", 8)),
                          dropout=float(cfg.get("lora_dropout", 0.0)),
                          rslora=bool(cfg.get("use_rslora", False)), targets=list(names))
    except (KeyError, TypeError, LoraError) as e:
        bad("r" if isinstance(e, KeyError) else "target_modules", str(e))
    return lora, cfg.get("base_model_name_or_path")


def load_peft(path: str, config, mesh=None) -> dict:
    """The adapters of a PEFT directory for ``config`` (whose ``lora`` is the directory's),
    in medjax's layout and shardings."""
    from .safetensors_io import SafetensorsFile
    file = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: no such file (a PEFT adapter directory needs its "
                                "weights as safetensors)")
    st = SafetensorsFile(file)
    keys = set(st.entries)
    shapes = abstract_adapters(config)

    def leaf(name):
        module, _, _, hf_module = PROJECTIONS[name]
        out = {}
        for part, peft_part in (("a", "lora_A"), ("b", "lora_B")):
            want = shapes["layers"][module]["lora"][name][part].shape
            stack = []
            for i in range(config.num_layers):
                key = f"model.layers.{i}.{hf_module}.{name}.{peft_part}.weight"
                found = [k for k in (PEFT_PREFIX + key, PEFT_PREFIX + key.replace(
                    ".weight", ".default.weight"), key) if k in keys]
                if not found:
                    raise LoraError(f"{file}: no tensor {PEFT_PREFIX + key}")
                t = np.asarray(st.get(found[0]), np.float32).T
                if t.shape != want[1:]:
                    raise LoraError(f"{file}: {found[0]} has shape {t.shape[::-1]}, expected "
                                    f"{want[1:][::-1]} for this base model and r")
                stack.append(t)
            out[part] = np.stack(stack)
        return out

    host = _tree(config, leaf)
    if mesh is None:
        return jax.tree.map(jnp.asarray, host)
    return jax.device_put(host, adapter_shardings(config, mesh))
