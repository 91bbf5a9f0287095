"""One pipeline builder for every objective; formats differ only in how they parse.

  sources (JSONL / Parquet / ArrayRecord, globs, weighted mixture)
  -> this process's shard -> validation pass (bad records: stop, or skip and count)
  -> per-source seeded shuffle, explicit epochs -> weighted mix
  -> parse (formats.py) -> tokenize (the objective's record kind) -> pack (text, chat)
     or pad (preference, kto)
  -> batch

Batches are dicts of numpy arrays for this process:
  pretrain / sft: input_ids, segment_ids, positions, loss_mask  [rows, seq_len]
  preference:     input_ids, segment_ids, positions, loss_mask  [rows, 2, seq_len]
                  (chosen at [:, 0], rejected at [:, 1]: one forward pass serves both),
                  and example_id [rows] (stable per record and pipeline)
  preference with data.pack_pairs (padding-free): input_ids, segment_ids, positions,
                  loss_mask [rows, 2 * seq_len], each row holding whole pairs: pair k of a
                  row is segments 2k + 1 (chosen) and 2k + 2 (rejected), positions
                  restarting at 0 for each; example_id [rows, seq_len] (pair k's id at
                  [:, k], -1 where the row has no pair k)
  kto:            the same [rows, 2, seq_len] arrays with the example at [:, 0] and a
                  mismatched prompt/completion pair (for the KL estimate) at [:, 1],
                  plus label [rows] (True: desirable)
  kto with data.pack_pairs (padding-free): the example and its KL sequence of each
                  ``batch_size`` examples (paired as above) packed like preference pairs
                  into [rows, 2 * seq_len] rows: example k of a row is segment 2k + 1, its
                  KL sequence 2k + 2; label [rows, seq_len] (slot k's, False where empty)
The iterator is a Grain ``DatasetIterator``: ``get_state``/``set_state`` resume
with exactly the next example. Training reads ``data.shards`` logical shards
(``ShardedBatches``), so the global batch does not depend on the process count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import grain
import numpy as np
from grain import experimental as grain_exp

from .sources import DataError
from .validate import ValidatedSource, make_check, source_specs

log = logging.getLogger(__name__)


# --------------------------------------------------------------- tokenizing
@dataclasses.dataclass(frozen=True)
class TokenizeOptions:
    seq_len: int
    max_prompt_length: int
    truncation_mode: str  # "keep_start" | "keep_end": which end of a long prompt to keep
    max_completion_length: int = 0  # preference responses (0: what fits in seq_len)


class Tokenize(grain.transforms.Map):
    """example -> token arrays for one objective (None: dropped, e.g. prompt too long)."""

    def __init__(self, kind: str, tokenizer, template, options: TokenizeOptions):
        self.kind, self.tok, self.template, self.opt = kind, tokenizer, template, options

    def map(self, ex):
        if self.kind == "text":
            bos = [] if self.tok.bos_id is None else [self.tok.bos_id]
            ids = np.asarray(bos + self.tok.encode(ex["text"]) + [self.tok.eos_id], np.int32)
            return {"input_ids": ids, "loss_mask": np.ones_like(ids)}
        if self.kind == "chat":
            ids, mask = self.template.encode_conversation(ex["messages"],
                                                          alpaca=ex.get("alpaca"))
            return {"input_ids": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, np.int32)}
        if self.kind == "preference":
            return self._pair(ex)
        if self.kind == "kto":
            return self._unpaired(ex)
        raise ValueError(f"no tokenizer for record kind {self.kind!r}")

    def _unpaired(self, ex):
        """KTO: prompt and completion kept apart; rows are assembled per batch."""
        prompt = self._prompt(ex["prompt"])
        room = self.opt.seq_len - len(prompt)
        if room < 1:
            return None
        completion = list(self.template.encode_response(ex["completion"],
                                                        prompt=ex["prompt"]))[:room]
        p = np.zeros(self.opt.max_prompt_length, np.int32)
        c = np.zeros(self.opt.seq_len, np.int32)
        p[:len(prompt)] = prompt
        c[:len(completion)] = completion
        return {"prompt": p, "prompt_len": np.int32(len(prompt)), "completion": c,
                "completion_len": np.int32(len(completion)), "label": np.bool_(ex["label"])}

    def _prompt(self, messages):
        ids = list(self.template.encode_prompt(messages))
        limit = self.opt.max_prompt_length
        if len(ids) > limit:
            ids = ids[:limit] if self.opt.truncation_mode == "keep_start" else ids[-limit:]
        return ids

    def _pair(self, ex):
        prompt = self._prompt(ex["prompt"])
        room = self.opt.seq_len - len(prompt)
        if room < 1:
            return None  # the prompt alone does not fit: dropped and counted
        rows, masks = [], []
        if self.opt.max_completion_length:
            room = min(room, self.opt.max_completion_length)
        for key in ("chosen", "rejected"):
            resp = list(self.template.encode_response(ex[key], prompt=ex["prompt"]))[:room]
            rows.append(prompt + resp)
            masks.append([0] * len(prompt) + [1] * len(resp))
        out = {"input_ids": np.zeros((2, self.opt.seq_len), np.int32),
               "loss_mask": np.zeros((2, self.opt.seq_len), np.int32),
               "segment_ids": np.zeros((2, self.opt.seq_len), np.int32),
               "positions": np.zeros((2, self.opt.seq_len), np.int32),
               "example_id": np.int64(ex["id"])}
        for r, (ids, mask) in enumerate(zip(rows, masks)):
            n = len(ids)
            out["input_ids"][r, :n] = ids
            out["loss_mask"][r, :n] = mask
            out["segment_ids"][r, :n] = 1
            out["positions"][r, :n] = np.arange(n)
        return out


class SplitLong(grain_exp.FlatMapTransform):
    """Cuts a tokenised document longer than ``seq_len`` into ``seq_len`` pieces.

    Nothing is truncated away: each piece becomes its own packed segment.
    """

    max_fan_out = 1 << 20

    def __init__(self, seq_len: int):
        self.seq_len = seq_len

    def flat_map(self, example):
        n = len(example["input_ids"])
        return [{k: v[start:start + self.seq_len] for k, v in example.items()}
                for start in range(0, n, self.seq_len)]


class PairToDocument(grain.transforms.Map):
    """A tokenised pair ([2, seq_len] padded) -> one packable document: the chosen then
    the rejected sequence, each with its own positions, marked by ``side`` (1, 2)."""

    def map(self, x):
        n = (x["segment_ids"] != 0).sum(-1)
        cat = lambda a: np.concatenate([a[0, :n[0]], a[1, :n[1]]])  # noqa: E731
        return {"input_ids": cat(x["input_ids"]), "loss_mask": cat(x["loss_mask"]),
                "side": np.repeat(np.array([1, 2], np.int32), n),
                "pos": cat(x["positions"]),
                "eid": np.full(int(n.sum()), x["example_id"], np.int64)}


PAIR_FEATURES = ("input_ids", "loss_mask", "side", "pos", "eid")


def packed_pairs(batch: dict) -> dict:
    """Grain's first-fit packing of ``PairToDocument``s -> the padding-free preference
    batch (module docstring): pair k of a row -> segments 2k + 1 and 2k + 2."""
    pair = batch["input_ids_segment_ids"]  # 1.. per packed pair in its row, 0 padding
    rows, length = pair.shape
    real = pair > 0
    out = {"input_ids": batch["input_ids"], "loss_mask": batch["loss_mask"],
           "segment_ids": np.where(real, 2 * pair - 2 + batch["side"], 0).astype(np.int32),
           "positions": np.where(real, batch["pos"], 0).astype(np.int32)}
    ids = np.full((rows, length // 2), -1, np.int64)
    r, t = np.nonzero(real & (batch["input_ids_positions"] == 0))  # each pair's first token
    ids[r, pair[r, t] - 1] = batch["eid"][r, t]
    out["example_id"] = ids
    return out


def pair_real(local: dict) -> np.ndarray:
    """Which pairs of a host batch are real (have chosen response tokens): ``[pairs]`` for
    padded batches, ``[rows, seq_len]`` (per slot) for packed ones."""
    mask = np.asarray(local["loss_mask"])
    if mask.ndim == 3:
        return mask[:, 0].any(-1)
    seg = np.asarray(local["segment_ids"])
    rows, length = seg.shape
    count = np.zeros((rows, length // 2 + 1), np.int64)
    chosen = (seg % 2 == 1) & (mask != 0)
    r, t = np.nonzero(chosen)
    np.add.at(count, (r, (seg[r, t] - 1) // 2), 1)
    return count[:, :length // 2] > 0


def kto_rows(batch: dict, seq_len: int) -> dict:
    """[rows, 2, seq_len]: [:, 0] = prompt_i + completion_i (the example), [:, 1] =
    prompt_i + completion_(i+1) (a mismatched pair for the KL estimate), and ``label``."""
    n = len(batch["label"])
    out = {k: np.zeros((n, 2, seq_len), np.int32)
           for k in ("input_ids", "loss_mask", "segment_ids", "positions")}
    for i in range(n):
        lp = int(batch["prompt_len"][i])
        if lp == 0:  # a padding row of a short final batch
            continue
        for r, j in ((0, i), (1, (i + 1) % n)):
            lc = min(int(batch["completion_len"][j]), seq_len - lp)
            if lc == 0:  # pair a real prompt with a padding row: skip the KL row
                continue
            ids = np.concatenate([batch["prompt"][i, :lp], batch["completion"][j, :lc]])
            out["input_ids"][i, r, :len(ids)] = ids
            out["loss_mask"][i, r, lp:lp + lc] = 1
            out["segment_ids"][i, r, :len(ids)] = 1
            out["positions"][i, r, :len(ids)] = np.arange(len(ids))
    out["label"] = np.asarray(batch["label"], bool)
    return out


class KtoExamples(grain_exp.FlatMapTransform):
    """A ``kto_rows`` batch -> its examples, one ``[2, seq_len]`` unit each (the example
    and its KL sequence), for packing; the label travels as ``example_id`` (0 / 1)."""

    max_fan_out = 1 << 20

    def flat_map(self, batch):
        keys = ("input_ids", "loss_mask", "segment_ids", "positions")
        return [dict({k: batch[k][i] for k in keys}, example_id=np.int64(batch["label"][i]))
                for i in range(len(batch["label"])) if batch["segment_ids"][i, 0].any()]


def packed_kto(batch: dict) -> dict:
    """Packed ``KtoExamples`` -> the padding-free KTO batch (module docstring)."""
    out = packed_pairs(batch)
    out["label"] = out.pop("example_id") == 1
    return out


class KeepStart(grain.transforms.Map):
    """Truncates an over-long conversation to ``seq_len``, logging how many so far."""

    def __init__(self, seq_len: int):
        self.seq_len, self.truncated = seq_len, 0

    def map(self, x):
        if len(x["input_ids"]) > self.seq_len:
            self.truncated += 1
            if self.truncated & (self.truncated - 1) == 0:  # 1, 2, 4, 8, ...
                log.warning("%d conversation(s) longer than seq_len=%d truncated so far "
                            "(their start is kept)", self.truncated, self.seq_len)
        return {k: v[:self.seq_len] for k, v in x.items()}


def _rename_packed(batch):
    return {"input_ids": batch["input_ids"], "segment_ids": batch["input_ids_segment_ids"],
            "positions": batch["input_ids_positions"], "loss_mask": batch["loss_mask"]}


# Open bins first-fit packing fills at once. At least 16 even when a data shard's batch
# is 1 row (batch_size 8 over 8 shards): 1 bin packed 81% real tokens on the SFT
# sample, 16 bins 93% (1 shard of 8 rows: 92%).
MIN_PACKING_BINS = 16
# Pairs are larger against their row (a pair of UltraMedical-like lengths at DPO's max length
# 2048 / 4 is 45% of a 2 x seq_len row on average): Grain's packer emits every open bin as
# soon as one pair fits none, so more bins fill fuller. One epoch of benchmarks/synthetic.py's
# pairs, 8 shards (benchmarks/packing.py's docstring): 16 bins 88.2% real tokens, 64 bins
# 90.2% at seq_len 512; 81.4% and 85.5% at seq_len 384.
MIN_PAIR_PACKING_BINS = 64
DEFAULT_SHARDS = 8  # data.shards=0: gcd(batch_size, 8): the same on 1, 2, 4 or 8 processes


def build_pipeline(data_cfg, tokenizer, template, *, objective: str, seq_len: int,
                   batch_size: int, seed: int, sources: Any = None,
                   num_epochs: int | None = None, shuffle: bool = True,
                   drop_remainder: bool = True, process_index: int = 0,
                   process_count: int = 1, num_workers: int = 0,
                   split: str = "", max_completion_length: int = 0) -> grain.IterDataset:
    """The batches this process feeds to ``objective`` (see the module docstring).

    ``batch_size`` is this process's rows per batch; ``num_epochs`` None repeats
    forever; ``sources`` defaults to ``data_cfg.sources``. ``num_workers`` > 0
    tokenises in that many Grain worker processes. ``split`` ("train" or "eval")
    keeps the records out of or in the ``data.eval_split`` held-out fraction.
    """
    from .. import objectives
    kind = objectives.get(objective).kind  # the record kind the objective trains on
    specs = source_specs(data_cfg.sources if sources is None else sources)
    options = TokenizeOptions(seq_len, data_cfg.max_prompt_length, data_cfg.truncation_mode,
                              max_completion_length)
    check = make_check(kind, template, options)
    parts = []
    for k, spec in enumerate(specs):
        ds = grain.MapDataset.source(
            ValidatedSource(spec, data_cfg, kind, process_index, process_count, check,
                            source_number=k, split=split))
        if shuffle:
            ds = ds.shuffle(seed=seed + k)
        parts.append(ds.repeat(num_epochs))
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(
        parts, weights=[s.weight for s in specs])
    it = ds.map(Tokenize(kind, tokenizer, template, options)).to_iter_dataset()
    if num_workers:  # tokenise in worker processes (the caller needs a __main__ guard)
        from absl import flags
        if not flags.FLAGS.is_parsed():  # Grain reads its absl flags in the workers
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    it = it.filter(lambda x: x is not None)
    if kind in ("text", "chat"):
        if kind == "text":
            it = grain_exp.FlatMapIterDataset(it, SplitLong(seq_len))
        else:  # an SFT conversation longer than seq_len keeps its start (and is counted)
            it = it.map(KeepStart(seq_len))
        it = grain_exp.FirstFitPackIterDataset(
            it, length_struct={"input_ids": seq_len, "loss_mask": seq_len},
            num_packing_bins=max(batch_size, MIN_PACKING_BINS), seed=seed, shuffle_bins=shuffle)
        return it.batch(batch_size, drop_remainder=drop_remainder).map(_rename_packed)
    packed = kind in ("preference", "kto") and data_cfg.get("pack_pairs", False)
    if kind == "kto":  # mismatched KL pairs are formed within each batch_size examples
        it = it.batch(batch_size, drop_remainder=drop_remainder and not packed)
        it = it.map(lambda b: kto_rows(b, seq_len))
        if not packed:
            return it
        it = grain_exp.FlatMapIterDataset(it, KtoExamples())
    if packed:  # padding-free: whole pairs (or KTO example + KL sequence) per row
        it = grain_exp.FirstFitPackIterDataset(
            it.map(PairToDocument()), length_struct={k: 2 * seq_len for k in PAIR_FEATURES},
            num_packing_bins=max(batch_size, MIN_PAIR_PACKING_BINS), seed=seed,
            shuffle_bins=shuffle)
        return it.batch(batch_size, drop_remainder=drop_remainder).map(
            packed_kto if kind == "kto" else packed_pairs)
    return it.batch(batch_size, drop_remainder=drop_remainder)


def data_shards(config, process_count: int) -> int:
    """The number of logical data shards: ``data.shards``, or (0) the largest divisor of
    ``batch_size`` that divides 8, so the global batch is the same on 1, 2, 4 or 8
    processes; one per process when that is not a multiple of the process count."""
    n = config.data.shards
    if not n:
        n = math.gcd(config.batch_size, DEFAULT_SHARDS)
        if n % process_count:
            n = process_count
    if n < 1 or n % process_count:
        raise ValueError(f"data.shards={config.data.shards}: must be a multiple of the "
                         f"process count {process_count} (0: gcd(batch_size, 8))")
    if config.batch_size % n:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by data.shards={n}")
    return n


class ShardedBatches:
    """This process's logical data shards as one iterator.

    Shard ``s`` of ``n`` reads records ``s, s + n, ...`` of every source and
    is its own pipeline (shuffle, packing, ``batch_size / n`` rows per batch);
    process ``p`` of ``P`` owns shards ``p * n / P ... (p + 1) * n / P - 1``
    and its local batch is their rows, concatenated. The global batch is
    therefore the same whatever the number of processes: a run can resume on
    another number of hosts. ``get_state`` holds one Grain state per shard.
    """

    def __init__(self, datasets: dict[int, grain.IterDataset], num_shards: int):
        self.num_shards = num_shards
        self.iterators = {s: iter(ds) for s, ds in datasets.items()}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        parts = [next(it) for it in self.iterators.values()]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def get_state(self) -> dict:
        return {str(s): it.get_state() for s, it in self.iterators.items()}

    def set_state(self, state: dict) -> None:
        for s, it in self.iterators.items():
            it.set_state(state[str(s)])


def eval_sources(data_cfg):
    """``data.eval_sources`` with ``auto`` resolved: the held-out file shipped with a
    bundled sample source, else "" (no eval set unless ``data.eval_split``)."""
    if data_cfg.eval_sources != "auto":
        return data_cfg.eval_sources
    from .samples import held_out
    return held_out(data_cfg.sources)


def eval_plan(data_cfg) -> tuple:
    """(sources, split, description) of the evaluation data: ``data.eval_split`` (a
    held-out fraction of ``data.sources``), else ``eval_sources``; sources "" for none."""
    if data_cfg.eval_split:
        return (data_cfg.sources, "eval",
                f"a held-out {data_cfg.eval_split:.3g} of data.sources (data.eval_split)")
    held = eval_sources(data_cfg)
    return held, "", f"data.eval_sources={held!r}"


def pipeline_from_config(config, tokenizer, template, *, eval: bool = False,
                         one_pass: bool = False, process_index: int = 0,
                         process_count: int = 1):
    """The training (or evaluation) pipeline for a full training config.

    Training: a ``ShardedBatches`` over this process's ``data.shards``.
    ``eval`` / ``one_pass`` (every training example once, in order, last batch
    kept, for precomputing per-example values such as reference log-probs):
    a Grain dataset over this process's records.
    """
    common = dict(objective=config.objective.name, seq_len=config.seq_len, seed=config.seed,
                  max_completion_length=config.objective.get("max_completion_length", 0))
    train_split = "train" if config.data.eval_split else ""
    if one_pass or eval:
        sources, split, _ = eval_plan(config.data) if eval else (None, train_split, "")
        return build_pipeline(config.data, tokenizer, template, **common,
                              batch_size=config.batch_size // process_count,
                              sources=sources, num_epochs=1, split=split,
                              shuffle=False, drop_remainder=False, process_index=process_index,
                              process_count=process_count)
    n = data_shards(config, process_count)
    per_process = n // process_count
    owned = range(process_index * per_process, (process_index + 1) * per_process)
    return ShardedBatches(
        {s: build_pipeline(config.data, tokenizer, template, **common,
                           batch_size=config.batch_size // n, num_epochs=config.epochs or None,
                           process_index=s, process_count=n, num_workers=config.data.num_workers,
                           split=train_split)
         for s in owned}, n)


def packing_efficiency(batch: dict) -> float:
    return float(np.mean(np.asarray(batch["segment_ids"]) != 0))


__all__: Sequence[str] = ["build_pipeline", "pipeline_from_config", "ShardedBatches",
                         "data_shards", "eval_plan", "source_specs", "DataError"]
