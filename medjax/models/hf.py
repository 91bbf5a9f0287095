"""Hugging Face checkpoints: ``load_hf`` (streamed into shards) and ``save_hf``.

Each medjax parameter maps to one Hugging Face tensor (per layer for the
stacked ``layers`` parameters) with one of five layout changes:

  same       identical layout (embeddings, norms)
  T          transposed (linear ``[out, in]`` -> ``[in, out]``)
  in_heads   ``[heads*head_dim, embed]`` -> ``[embed, heads, head_dim]``   (q, k, v)
  out_heads  ``[embed, heads*head_dim]`` -> ``[heads, head_dim, embed]``   (o)
  row        ``[1, embed]`` -> ``[embed]``                    (a one-label ``score``)

Reward models (``reward_head`` in place of ``lm_head``) are
``LlamaForSequenceClassification`` / ``MistralForSequenceClassification`` with
``num_labels=1``: ``score.weight [1, hidden]`` (no bias) is the reward head.
transformers scores a row at its rightmost token that is not ``pad_token_id``
(attention mask ignored); medjax at its last non-pad (segment != 0) token. The
two agree as long as no real row ends with the pad id (see ``save_hf``).

Loading builds every parameter with ``jax.make_array_from_callback``: each
device's shard is read straight from the memory-mapped safetensors file (only
that shard's bytes), converted to the parameter dtype and placed on its device,
so the model is never held whole in host memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from .config import REWARD_FAMILIES, ModelConfig, hf_head
from .decoder import abstract_params, head_of, param_shardings
from .safetensors_io import SafetensorsError, SafetensorsFile, write_safetensors

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Buffers some checkpoints carry that hold no parameters.
_IGNORED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


class CheckpointError(ValueError):
    """A Hugging Face checkpoint that does not match its config (names file and tensor)."""


@dataclasses.dataclass(frozen=True)
class _Map:
    path: tuple[str, ...]  # medjax parameter path
    hf: str  # Hugging Face tensor name; '{i}' is the layer index, '{j}' the expert's
    kind: str  # same | T | in_heads | out_heads | row

    @property
    def layered(self) -> bool:
        return self.path[0] == "layers"

    @property
    def per_expert(self) -> bool:  # medjax [layers, experts, ...] <- one tensor per (i, j)
        return "{j}" in self.hf

    def names(self, config: ModelConfig) -> list[tuple[tuple[int, ...], str]]:
        """(index into the medjax array, HF tensor name) of every tensor."""
        if not self.layered:
            return [((), self.hf)]
        if self.per_expert:
            return [((i, j), self.hf.format(i=i, j=j)) for i in range(config.num_layers)
                    for j in range(config.num_experts)]
        return [((i,), self.hf.format(i=i)) for i in range(config.num_layers)]

    def lead(self) -> int:  # leading medjax dims that index tensors
        return 0 if not self.layered else 2 if self.per_expert else 1


def param_map(config: ModelConfig, head: str = "lm") -> list[_Map]:
    """The medjax <-> Hugging Face tensor correspondence, in file order (``head="reward"``:
    the reward head as a sequence classifier's ``score``, no LM head)."""
    pre = "model.layers.{i}."
    maps = [_Map(("embed", "embedding"), "model.embed_tokens.weight", "same")]
    maps += [
        _Map(("layers", "attn_norm", "scale"), pre + "input_layernorm.weight", "same"),
        _Map(("layers", "attn", "q_proj"), pre + "self_attn.q_proj.weight", "in_heads"),
        _Map(("layers", "attn", "k_proj"), pre + "self_attn.k_proj.weight", "in_heads"),
        _Map(("layers", "attn", "v_proj"), pre + "self_attn.v_proj.weight", "in_heads"),
        _Map(("layers", "attn", "o_proj"), pre + "self_attn.o_proj.weight", "out_heads"),
        _Map(("layers", "mlp_norm", "scale"), pre + "post_attention_layernorm.weight", "same"),
    ]
    if config.num_experts:  # Mixtral's block_sparse_moe (the names transformers saves)
        moe = pre + "block_sparse_moe."
        maps += [
            _Map(("layers", "moe", "router"), moe + "gate.weight", "T"),
            _Map(("layers", "moe", "gate_proj"), moe + "experts.{j}.w1.weight", "T"),
            _Map(("layers", "moe", "up_proj"), moe + "experts.{j}.w3.weight", "T"),
            _Map(("layers", "moe", "down_proj"), moe + "experts.{j}.w2.weight", "T"),
        ]
    else:
        maps += [
            _Map(("layers", "mlp", "gate_proj"), pre + "mlp.gate_proj.weight", "T"),
            _Map(("layers", "mlp", "up_proj"), pre + "mlp.up_proj.weight", "T"),
            _Map(("layers", "mlp", "down_proj"), pre + "mlp.down_proj.weight", "T"),
        ]
    maps.append(_Map(("final_norm", "scale"), "model.norm.weight", "same"))
    if head == "reward":
        maps.append(_Map(("reward_head", "kernel"), "score.weight", "row"))
    elif not config.tie_embeddings:
        maps.append(_Map(("lm_head", "kernel"), "lm_head.weight", "T"))
    return maps


def _hf_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "same":
        return shape
    if kind == "T":
        return shape[::-1]
    if kind == "row":
        return (1, *shape)
    if kind == "in_heads":
        d, n, h = shape
        return (n * h, d)
    d = shape[-1]
    n, h = shape[:2]
    return (d, n * h)


def _bounds(sl: slice, dim: int) -> tuple[int, int]:
    start, stop, step = sl.indices(dim)
    assert step == 1, "shards are contiguous"
    return start, stop


def _read_block(hf: np.ndarray, kind: str, index: tuple[slice, ...],
                shape: tuple[int, ...]) -> np.ndarray:
    """The medjax-layout block ``index`` of one tensor, reading only what it needs."""
    if kind == "same":
        return hf[index]
    if kind == "T":
        return hf[index[1], index[0]].T
    if kind == "row":  # ours [d] <- hf [1, d]
        return hf[0, index[0]]
    if kind == "in_heads":  # ours [d, n, h] <- hf [n*h, d]
        (d0, d1), (n0, n1), (h0, h1) = (_bounds(s, n) for s, n in zip(index, shape))
        hd = shape[2]
        block = hf[n0 * hd:n1 * hd, d0:d1].reshape(n1 - n0, hd, d1 - d0)[:, h0:h1, :]
        return block.transpose(2, 0, 1)
    # out_heads: ours [n, h, d] <- hf [d, n*h]
    (n0, n1), (h0, h1), (d0, d1) = (_bounds(s, n) for s, n in zip(index, shape))
    hd = shape[1]
    block = hf[d0:d1, n0 * hd:n1 * hd].reshape(d1 - d0, n1 - n0, hd)[:, :, h0:h1]
    return block.transpose(1, 2, 0)


def _to_hf_layout(kind: str, a: np.ndarray) -> np.ndarray:
    if kind == "same":
        return a
    if kind == "T":
        return a.T
    if kind == "row":
        return a[None]
    if kind == "in_heads":
        d, n, h = a.shape
        return a.transpose(1, 2, 0).reshape(n * h, d)
    n, h, d = a.shape
    return a.transpose(2, 0, 1).reshape(d, n * h)


def _get(tree: dict, path: tuple[str, ...]):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple[str, ...], value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


# ----------------------------------------------------------------------- load
def _open_files(path: str) -> dict[str, SafetensorsFile]:
    """Tensor name -> the SafetensorsFile holding it."""
    index_path = os.path.join(path, INDEX_FILE)
    single = os.path.join(path, SINGLE_FILE)
    if os.path.exists(index_path):
        try:
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{index_path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        except KeyError:
            raise CheckpointError(f"{index_path}: field 'weight_map' is missing") from None
        files: dict[str, SafetensorsFile] = {}
        out = {}
        for name, fname in weight_map.items():
            if fname not in files:
                fpath = os.path.join(path, fname)
                if not os.path.exists(fpath):
                    raise FileNotFoundError(f"{fpath}: no such file (listed in {index_path} "
                                            f"for tensor '{name}')")
                files[fname] = SafetensorsFile(fpath)
            if name not in files[fname].entries:
                raise CheckpointError(f"{files[fname].path}: tensor '{name}' is missing "
                                      f"(listed there by {index_path})")
            out[name] = files[fname]
        return out
    if os.path.exists(single):
        st = SafetensorsFile(single)
        return {name: st for name in st.entries}
    found = sorted(os.listdir(path))
    hint = (" (PyTorch .bin weights are not read: convert them to safetensors first)"
            if any(f.endswith(".bin") for f in found) else "")
    raise FileNotFoundError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found{hint}; "
                            f"directory holds {found[:10]}")


def load_hf(path: str | os.PathLike, *, dtype: str = "float32", mesh: Mesh | None = None,
            **config_overrides: Any) -> tuple[ModelConfig, dict]:
    """Reads a local Hugging Face Llama / Mistral directory into medjax parameters.

    Returns ``(config, params)``; parameters are stored in ``dtype`` (also the
    config's compute dtype unless overridden) and, with ``mesh``, sharded by
    the current axis rules, each shard read straight from disk. A reward model
    (``*ForSequenceClassification`` with one label) gives ``params["reward_head"]``
    in place of ``params["lm_head"]``.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory")
    overrides = {"param_dtype": dtype, "dtype": dtype, **config_overrides}
    config_path = os.path.join(path, "config.json")
    config = ModelConfig.from_hf(config_path, **overrides)
    with open(config_path) as f:  # valid JSON: from_hf has read it
        head = hf_head(json.load(f))
    tensors = _open_files(path)
    abstract = abstract_params(config, head)

    used = set()
    for m in param_map(config, head):
        shape = _get(abstract, m.path).shape
        want = _hf_shape(m.kind, shape[m.lead():])
        for _, name in m.names(config):
            if name not in tensors:
                where = sorted({t.path for t in tensors.values()})
                raise CheckpointError(f"{path}: tensor '{name}' is missing (looked in {where})")
            got = tensors[name].entries[name].shape
            if got != want:
                raise CheckpointError(
                    f"{tensors[name].path}: tensor '{name}' has shape {list(got)}, but "
                    f"config.json implies {list(want)}")
            used.add(name)
    extra = [n for n in tensors if n not in used and not _IGNORED.match(n)
             and not (config.tie_embeddings and head == "lm" and n == "lm_head.weight")]
    if extra:
        raise CheckpointError(
            f"{tensors[extra[0]].path}: tensor '{extra[0]}' is not part of a {config.family} "
            f"{'reward ' if head == 'reward' else ''}model medjax can load ({len(extra)} "
            f"unexpected tensors: {extra[:5]})")

    shardings = param_shardings(config, mesh, head)
    np_dtype = np.dtype(jax.numpy.dtype(dtype))

    params: dict = {}
    for m in param_map(config, head):
        shape = _get(abstract, m.path).shape

        def callback(index, m=m, shape=shape):
            try:
                if not m.layered:
                    return np.asarray(_read_block(tensors[m.hf].get(m.hf), m.kind, index, shape),
                                      dtype=np_dtype)
                n = m.lead()
                ranges = [range(*_bounds(index[a], shape[a])) for a in range(n)]

                def block(*ij):
                    name = m.hf.format(**dict(zip("ij", ij)))
                    return _read_block(tensors[name].get(name), m.kind, index[n:], shape[n:])
                if n == 1:
                    blocks = [block(i) for i in ranges[0]]
                else:
                    blocks = [np.stack([block(i, j) for j in ranges[1]]) for i in ranges[0]]
                return np.stack(blocks).astype(np_dtype)
            except (OSError, SafetensorsError) as e:
                raise CheckpointError(f"{path}: reading '{m.hf}': {e}") from e

        _set(params, m.path, jax.make_array_from_callback(shape, _get(shardings, m.path),
                                                          callback))
    return config, params


# ----------------------------------------------------------------------- save
def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def reward_hf_fields(config: ModelConfig, pad_token_id: int | None = None) -> dict[str, Any]:
    """The ``config.json`` fields that make a reward model a one-label sequence classifier.

    ``pad_token_id`` (default: the first EOS id) is how transformers finds the
    token it scores: the rightmost one that is not ``pad_token_id``.
    """
    if pad_token_id is None:
        if not config.eos_token_id:
            raise ValueError("a reward model needs a pad_token_id (transformers finds each row's "
                             "last token by it) and the model config has no EOS id to default "
                             "to; pass pad_token_id (--pad_token_id)")
        pad_token_id = config.eos_token_id[0]
    if not 0 <= int(pad_token_id) < config.vocab_size:
        raise ValueError(f"pad_token_id={pad_token_id} is not a token id of this model "
                         f"(vocab_size {config.vocab_size})")
    return {"architectures": [REWARD_FAMILIES[config.family]], "num_labels": 1,
            "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
            "pad_token_id": int(pad_token_id)}


def save_hf(config: ModelConfig, params: dict, path: str | os.PathLike, *,
            dtype: str | None = None, max_shard_size: int = 5 * 2**30,
            overwrite: bool = False, pad_token_id: int | None = None,
            token_ids: dict | None = None) -> None:
    """Writes ``config.json`` and safetensors that ``transformers`` loads as-is.

    Tensors are gathered and written one at a time (sharded into
    ``model-0000k-of-0000n.safetensors`` plus an index beyond
    ``max_shard_size`` bytes). ``dtype`` defaults to the parameter dtype. An
    existing checkpoint at ``path`` is an error unless ``overwrite``. In a
    multi-process job every process must call this; process 0 writes.

    Parameters with a ``reward_head`` (and no ``lm_head``) are written as a
    reward model: ``<Family>ForSequenceClassification``, ``num_labels=1``,
    ``score.weight [1, hidden]``, and ``pad_token_id`` (default: the first EOS
    id). transformers scores each row at its rightmost token that is not the
    pad id, medjax at its last real token: they agree unless a real row *ends*
    with the pad id. The EOS default is wrong for data whose responses end with
    EOS (the ``mistral`` and ``alpaca`` templates): pass the tokenizer's pad id
    there (``python -m medjax.convert`` does, for a training workdir). For a
    language model, ``pad_token_id`` is written only when given. ``token_ids``
    (``bos_token_id``, ``eos_token_id``, ``pad_token_id`` of the tokenizer the model
    was trained with) replace the config's own.
    """
    path = os.fspath(path)
    writer = jax.process_index() == 0
    head = head_of(params)
    if head == "reward" and "lm_head" in params:
        raise ValueError("parameters hold both 'lm_head' and 'reward_head': a reward model is "
                         "written without its LM head; drop one of them")
    hf_config = config.to_hf(torch_dtype=dtype or config.param_dtype)
    hf_config.update({k: v for k, v in (token_ids or {}).items() if v is not None})
    if head == "reward":
        hf_config.update(reward_hf_fields(config, pad_token_id))
    elif pad_token_id is not None:
        hf_config["pad_token_id"] = int(pad_token_id)
    if writer and os.path.isdir(path) and not overwrite:
        clash = [f for f in os.listdir(path)
                 if f == "config.json" or f.endswith(".safetensors") or f == INDEX_FILE]
        if clash:
            raise FileExistsError(f"{path}: already holds a checkpoint ({sorted(clash)[:3]}); "
                                  "pass overwrite=True (--overwrite) to replace it")
    abstract = abstract_params(config, head)
    got = jax.tree.map(lambda a: tuple(a.shape), params)
    want = jax.tree.map(lambda a: tuple(a.shape), abstract)
    if got != want:
        raise ValueError(f"parameters do not match the config: shapes {got} vs {want}")
    dtype = dtype or config.param_dtype
    np_dtype = np.dtype(jax.numpy.dtype(dtype))

    entries = []  # (name, shape, dtype, produce)
    for m in param_map(config, head):
        arr = _get(params, m.path)
        shape = tuple(arr.shape)
        if m.layered:
            hf_shape = _hf_shape(m.kind, shape[m.lead():])
            for ix, name in m.names(config):
                entries.append((name, hf_shape, np_dtype,
                                lambda arr=arr, ix=ix, k=m.kind: _to_hf_layout(
                                    k, _to_host(arr[ix]))))
        else:
            entries.append((m.hf, _hf_shape(m.kind, shape), np_dtype,
                            lambda arr=arr, k=m.kind: _to_hf_layout(k, _to_host(arr))))

    shards: list[list] = [[]]
    size = 0
    for e in entries:
        nbytes = int(np.prod(e[1])) * np_dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += nbytes

    if writer:
        os.makedirs(path, exist_ok=True)
        for stale in (SINGLE_FILE, INDEX_FILE):  # only reached with overwrite=True
            if os.path.exists(os.path.join(path, stale)):
                os.unlink(os.path.join(path, stale))
    meta = {"format": "pt"}
    if len(shards) == 1:
        write_safetensors(os.path.join(path, SINGLE_FILE), shards[0], meta, write=writer)
    else:
        weight_map, total = {}, 0
        for k, shard in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(os.path.join(path, fname), shard, meta, write=writer)
            total += sum(int(np.prod(e[1])) * np_dtype.itemsize for e in shard)
            weight_map.update({e[0]: fname for e in shard})
        if writer:
            with open(os.path.join(path, INDEX_FILE), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f,
                          indent=2)
    if writer:
        # config.json last: a directory without it is visibly incomplete.
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
