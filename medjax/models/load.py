"""One model loader: ``load(path, mesh=...)`` for every place that reads a model.

``path`` is one of
  a Hugging Face directory     ``config.json`` + safetensors (``load_hf``, streamed per shard)
  a medjax model checkpoint    ``medjax_model.json`` + Orbax ``params/`` (``checkpoint.py``)
  a medjax.train workdir       ``model_config.json`` + ``checkpoints/<step>/state``: the
                               parameters of its newest checkpoint (no optimizer state)
and ``load`` returns a ``Model``: the config, the parameters (sharded on ``mesh``, or on
one device), the head (``lm`` | ``reward``), the tokenizer and chat template that belong
to the model (a tokenizer name or directory; None where the model records none), and
an identity (what the weights are, for binding values computed from them).

A workdir's ``model_config.json`` has the layout of ``medjax_model.json`` plus the
run's objective; workdirs written before that layout (a flat config + objective)
still load (their head is read from the checkpoint's tree).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
from jax.sharding import Mesh

from .checkpoint import META_FILE, FORMAT, is_model_checkpoint, load_model, read_meta
from .config import ModelConfig
from .decoder import abstract_params, param_shardings

WORKDIR_META = "model_config.json"  # in a training workdir, next to checkpoints/
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass
class Model:
    config: ModelConfig
    params: dict
    head: str  # "lm" | "reward"
    tokenizer: str | None  # "llama3" | "mistral" | a tokenizer directory | None
    template: str | None  # the chat template the model was trained with (None: unknown)
    identity: dict  # what these weights are (source, path, files' sizes and times, step)


def source_kind(path: str) -> str:
    """``"workdir"``, ``"medjax"`` or ``"hf"``; anything else is a FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory")
    if is_training_workdir(path):
        return "workdir"
    if is_model_checkpoint(path):
        return "medjax"
    if os.path.isfile(os.path.join(path, "config.json")):
        return "hf"
    from .lora import is_peft_dir
    if is_peft_dir(path):
        return "peft"
    raise FileNotFoundError(f"{path}: neither a medjax model checkpoint ({META_FILE}), a "
                            f"medjax.train workdir ({WORKDIR_META}, checkpoints/), a Hugging "
                            "Face directory (config.json) nor a PEFT adapter directory "
                            "(adapter_config.json)")


def peft_base(path: str, base: str = "") -> str:
    """The base model directory of the PEFT adapter directory ``path``: ``base`` when given,
    else its ``adapter_config.json``'s ``base_model_name_or_path`` (a local directory,
    absolute or relative to the adapter directory)."""
    from .lora import ADAPTER_CONFIG, read_peft_config
    _, named = read_peft_config(path)
    if base:
        return os.path.abspath(base)
    for candidate in (named, os.path.join(path, named or "")):
        if named and os.path.isdir(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(
        f"{os.path.join(path, ADAPTER_CONFIG)}: field 'base_model_name_or_path': {named!r} is not "
        "a local directory (medjax downloads nothing): set it to the base model's directory"
        " (or model.lora.base in a training config)")


def is_training_workdir(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, WORKDIR_META))
            and os.path.isdir(os.path.join(path, "checkpoints")))


def checkpoint_steps(workdir: str) -> tuple[str, list[int]]:
    """(the workdir's checkpoints directory, its complete steps in order)."""
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
    if not steps:
        raise FileNotFoundError(f"{directory}: no complete checkpoint to start from")
    return directory, steps


def model_meta(config: ModelConfig, head: str, *, tokenizer: str | None = None,
               template: str | None = None, **extra) -> dict:
    """The metadata a model checkpoint and a workdir record beside the weights."""
    return {"format": FORMAT, "version": 1, "config": config.to_dict(), "head": head,
            "tokenizer": tokenizer, "template": template, **extra}


def read_workdir_meta(workdir: str) -> dict:
    """A workdir's model metadata, in the layout of ``model_meta`` (old layouts converted)."""
    path = os.path.join(workdir, WORKDIR_META)
    with open(path) as f:
        saved = json.load(f)
    if saved.get("format") == FORMAT:
        return read_meta(path, saved)
    objective = saved.pop("objective", "")
    return {"format": FORMAT, "config": ModelConfig.from_dict(saved),
            "head": _stored_head(workdir), "tokenizer": None, "template": None,
            "objective": objective}


def _stored_head(workdir: str) -> str:
    import orbax.checkpoint as ocp
    directory, steps = checkpoint_steps(workdir)
    with ocp.PyTreeCheckpointer() as ckptr:
        tree = ckptr.metadata(os.path.join(directory, str(steps[-1]), "state")).item_metadata
    return "reward" if "reward_head" in tree["params"] else "lm"


def describe(path: str | os.PathLike) -> dict:
    """What ``load`` would return, without reading weights: ``{"kind", "config", "head",
    "tokenizer", "template"}``."""
    path = os.path.abspath(os.fspath(path))
    kind = source_kind(path)
    if kind == "peft":  # the base's, with the adapter directory's own tokenizer if it has one
        from .lora import read_peft_config
        about = describe(peft_base(path))
        has_tok = any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)
        return dict(about, kind=kind, tokenizer=path if has_tok else about["tokenizer"],
                    lora=read_peft_config(path)[0])
    if kind == "hf":
        from .config import hf_head
        config_path = os.path.join(path, "config.json")
        config = ModelConfig.from_hf(config_path)
        with open(config_path) as f:
            head = hf_head(json.load(f))
        has_tok = any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)
        return {"kind": kind, "config": config, "head": head,
                "tokenizer": path if has_tok else None, "template": None}
    meta = (read_meta(os.path.join(path, META_FILE)) if kind == "medjax"
            else read_workdir_meta(path))
    config = meta["config"]
    return {"kind": kind, "config": config.replace(lora=None), "head": meta["head"],
            "tokenizer": meta.get("tokenizer"), "template": meta.get("template"),
            "lora": config.lora, "lora_base": meta.get("lora_base")}


def _fingerprint(files: list[str]) -> list:
    out = []
    for f in sorted(files):
        try:
            st = os.stat(f)
            out.append([os.path.basename(f), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([os.path.basename(f), None, None])
    return out


def _cast(params: dict, dtype: str) -> dict:
    dt = jax.numpy.dtype(dtype)
    return jax.jit(lambda p: jax.tree.map(lambda x: x.astype(dt), p),
                   out_shardings=jax.tree.map(lambda x: x.sharding, params))(params)


def load(path: str | os.PathLike, *, mesh: Mesh | None = None, **overrides: Any) -> Model:
    """The model at ``path`` (see the module docstring), sharded on ``mesh``.

    ``overrides`` are ModelConfig execution fields (``param_dtype``, ``dtype``,
    ``remat_policy``, ``scan_layers``, ``attention``); ``param_dtype`` casts the stored
    parameters (default: as stored).
    """
    path = os.path.abspath(os.fspath(path))
    about = describe(path)
    kind, head, tokenizer, template = (about[k] for k in ("kind", "head", "tokenizer",
                                                          "template"))
    if kind == "peft":  # the adapters merged into their base
        from .lora import load_peft, merge
        base = load(peft_base(path), mesh=mesh, **overrides)
        config = base.config.replace(lora=about["lora"])
        params = merge(config, base.params, load_peft(path, config, mesh))
        return Model(config.replace(lora=None), params, base.head, tokenizer, template,
                     {"source": kind, "path": path, "base": base.identity,
                      "files": _fingerprint([os.path.join(path, f) for f in os.listdir(path)
                                             if f.startswith("adapter_")])})
    if kind == "hf":
        from .hf import load_hf
        dtype = overrides.pop("param_dtype", None) or _hf_dtype(path)
        compute = overrides.pop("dtype", dtype)
        config, params = load_hf(path, dtype=dtype, mesh=mesh, **overrides)
        config = config.replace(dtype=compute)
        files = [os.path.join(path, f) for f in os.listdir(path)
                 if f.endswith((".safetensors", ".json"))]
        identity = {"files": _fingerprint(files)}
    elif kind == "medjax":
        config, params = load_model(path, mesh=mesh, **overrides)
        params_dir = os.path.join(path, "params")
        identity = {"files": _fingerprint([os.path.join(params_dir, f)
                                           for f in os.listdir(params_dir)]
                                          + [os.path.join(path, META_FILE)])}
    elif about["lora"] is not None:  # a LoRA run: its adapters merged into its base
        config, params, step = _load_lora_workdir(path, about, mesh, **overrides)
        identity = {"step": step, "files": _fingerprint([os.path.join(path, WORKDIR_META)])}
    else:
        config, params, step = _load_workdir_params(path, about["config"], head, mesh,
                                                    **overrides)
        identity = {"step": step, "files": _fingerprint([os.path.join(path, WORKDIR_META)])}
    return Model(config, params, head, tokenizer, template,
                 {"source": kind, "path": path, **identity})


def _hf_dtype(path: str) -> str:
    try:
        with open(os.path.join(path, "config.json")) as f:
            hf = json.load(f)
    except (OSError, ValueError):
        return "float32"  # load_hf reports the problem with its file name
    dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    return dtype if dtype in DTYPES else "float32"


def _load_workdir_params(workdir: str, saved: ModelConfig, head: str, mesh: Mesh | None,
                         **overrides):
    """(config, params, step) of a workdir's newest checkpoint: only the parameters are
    read, straight into their shardings."""
    import orbax.checkpoint as ocp
    config = saved.replace(**overrides)
    directory, steps = checkpoint_steps(workdir)
    abstract = abstract_params(saved, head)  # as stored
    shardings = param_shardings(config, mesh, head)
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
    with ocp.PyTreeCheckpointer() as ckptr:
        state = ckptr.restore(
            os.path.join(directory, str(steps[-1]), "state"),
            args=ocp.args.PyTreeRestore(item={"params": abstract},
                                        restore_args={"params": restore_args},
                                        partial_restore=True))
    params = state["params"]
    if config.param_dtype != saved.param_dtype:
        params = _cast(params, config.param_dtype)
    return config, params, steps[-1]


def lora_base(about: dict, mesh: Mesh | None, **overrides) -> "Model":
    """The frozen base of a LoRA workdir (``describe``'s ``about``): the model its run
    loaded, or the seeded random init of its preset."""
    base = about["lora_base"] or {}
    if base.get("source") == "preset":
        from .decoder import init_params
        import jax.random
        config = ModelConfig.from_dict(base["config"]).replace(**overrides)
        return Model(config, init_params(config, jax.random.key(base["seed"]), mesh=mesh),
                     "lm", None, None, base)
    if not base.get("path") or not os.path.isdir(base["path"]):
        raise FileNotFoundError(f"{base.get('path')!r}: the base model of this LoRA run is "
                                "gone (its adapters need it)")
    return load(base["path"], mesh=mesh, **overrides)


def lora_trainable(path: str, about: dict, mesh: Mesh | None) -> tuple[dict, int]:
    """(trainable tree, step) of a LoRA workdir's newest checkpoint: the adapters and, for
    a reward model, its head."""
    import orbax.checkpoint as ocp
    from jax.sharding import NamedSharding, SingleDeviceSharding
    from .lora import abstract_adapters, adapter_shardings
    config = about["config"].replace(lora=about["lora"])
    abstract = {"layers": abstract_adapters(config)["layers"]}
    if mesh is None:
        single = SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: single, abstract)
    else:
        shardings = {"layers": adapter_shardings(config, mesh)["layers"]}
    if about["head"] == "reward":
        from ..parallel.sharding import logical_to_spec
        abstract["reward_head"] = {"kernel": jax.ShapeDtypeStruct(
            (config.hidden_size,), jax.numpy.float32)}
        shardings["reward_head"] = {"kernel": SingleDeviceSharding(jax.local_devices()[0])
                                    if mesh is None else
                                    NamedSharding(mesh, logical_to_spec(("embed",)))}
    directory, steps = checkpoint_steps(path)
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
    with ocp.PyTreeCheckpointer() as ckptr:
        meta = ckptr.metadata(os.path.join(directory, str(steps[-1]), "state")).item_metadata
        if about["head"] == "reward":  # the head is stored in the run's param dtype
            abstract["reward_head"]["kernel"] = jax.ShapeDtypeStruct(
                (config.hidden_size,), meta["params"]["reward_head"]["kernel"].dtype)
        state = ckptr.restore(
            os.path.join(directory, str(steps[-1]), "state"),
            args=ocp.args.PyTreeRestore(item={"params": abstract},
                                        restore_args={"params": restore_args},
                                        partial_restore=True))
    return state["params"], steps[-1]


def _load_lora_workdir(path: str, about: dict, mesh: Mesh | None, **overrides):
    from .lora import merge
    base = lora_base(about, mesh, **overrides)
    trainable, step = lora_trainable(path, about, mesh)
    config = base.config.replace(lora=about["lora"])
    params = base.params
    if "reward_head" in trainable:  # a reward run replaced its base's LM head
        params = {k: v for k, v in params.items() if k != "lm_head"}
    return base.config, merge(config, params, trainable), step


def identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
