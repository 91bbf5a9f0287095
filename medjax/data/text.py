"""Plain-text pretraining data: JSONL ``{"text": ...}`` -> tokens -> packed rows -> batches.

``JsonlSource`` is a random-access Grain source over one or more JSONL files:
it indexes line offsets once and reads a line when asked, so a large corpus is
never loaded whole. Bad records raise ``DataError`` naming the file, line and
field. The pipeline shards records by process, shuffles with a seed per epoch,
tokenises with BOS/EOS, cuts documents longer than ``seq_len`` into pieces, packs them first-fit into ``seq_len`` rows with
``segment_ids``/``positions`` and batches them; its iterator state is saved in
checkpoints so a resumed run continues with exactly the next batch.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from typing import Sequence

import grain
import numpy as np
from grain import experimental as grain_exp


class DataError(ValueError):
    """Bad input data: the message names the file, line and field."""


def expand_sources(sources: str | Sequence[str]) -> list[str]:
    """Comma-separated (or listed) paths and glob patterns -> sorted file list."""
    items = [s.strip() for s in sources.split(",")] if isinstance(sources, str) else list(sources)
    files = []
    for pattern in filter(None, items):
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise DataError(f"{pattern}: no file matches this data source")
        files.extend(matches)
    if not files:
        raise DataError("no data sources given")
    return files


def _open(path):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


class JsonlSource:
    """Random access to JSON lines across files; item = (path, line_number, record)."""

    def __init__(self, paths: Sequence[str], field: str = "text"):
        self.paths = list(paths)
        self.field = field
        self._index: list[tuple[int, int, int]] = []  # (file, line number, byte offset)
        self._gz_lines: dict[int, list[bytes]] = {}
        for f, path in enumerate(self.paths):
            if path.endswith(".gz"):  # no seeking in gzip: keep the (compressed-size) lines
                with _open(path) as fh:
                    lines = fh.read().splitlines()
                self._gz_lines[f] = lines
                self._index += [(f, n + 1, n) for n, line in enumerate(lines) if line.strip()]
                continue
            with open(path, "rb") as fh:
                offset, n = 0, 0
                for line in fh:
                    n += 1
                    if line.strip():
                        self._index.append((f, n, offset))
                    offset += len(line)
        if not self._index:
            raise DataError(f"{', '.join(self.paths)}: no records (empty dataset)")

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict:
        f, lineno, offset = self._index[i]
        path = self.paths[f]
        if f in self._gz_lines:
            raw = self._gz_lines[f][offset]
        else:
            with open(path, "rb") as fh:
                fh.seek(offset)
                raw = fh.readline()
        where = f"{path}:{lineno}"
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        value = record.get(self.field)
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{self.field}' is "
                            f"{'missing' if value is None else type(value).__name__}, "
                            "expected a string")
        if not value.strip():
            raise DataError(f"{where}: field '{self.field}' is empty")
        return {self.field: value}


def _tokenize(tokenizer):
    def fn(record):
        ids = [tokenizer.bos_id] + tokenizer.encode(record["text"]) + [tokenizer.eos_id]
        ids = np.asarray(ids, np.int32)
        return {"input_ids": ids, "loss_mask": np.ones_like(ids)}
    return fn


class SplitLong(grain_exp.FlatMapTransform):
    """Cuts a tokenised document longer than ``seq_len`` into ``seq_len`` pieces.

    Nothing is truncated away: each piece becomes its own packed segment
    (positions restart), as in other pretraining stacks.
    """

    max_fan_out = 1 << 20

    def __init__(self, seq_len: int):
        self.seq_len = seq_len

    def flat_map(self, example):
        n = len(example["input_ids"])
        return [{k: v[start:start + self.seq_len] for k, v in example.items()}
                for start in range(0, n, self.seq_len)]


def _rename(batch):
    return {
        "input_ids": batch["input_ids"],
        "segment_ids": batch["input_ids_segment_ids"],
        "positions": batch["input_ids_positions"],
        "loss_mask": batch["loss_mask"],
    }


def text_pipeline(sources, tokenizer, *, seq_len: int, batch_size: int, seed: int,
                  num_epochs: int | None = None, shuffle: bool = True,
                  drop_remainder: bool = True, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """Batches of packed rows for this process: dict of int32 arrays [batch_size, seq_len].

    ``batch_size`` is this process's share of the global batch. ``num_epochs``
    None repeats forever; otherwise the pipeline ends after that many passes.
    With ``drop_remainder=False`` the last batch may be smaller (evaluation).
    """
    source = JsonlSource(expand_sources(sources))
    ds = grain.MapDataset.source(source)
    if process_count > 1:
        ds = ds[process_index::process_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    ds = ds.map(_tokenize(tokenizer)).to_iter_dataset()
    ds = grain_exp.FlatMapIterDataset(ds, SplitLong(seq_len))
    ds = grain_exp.FirstFitPackIterDataset(
        ds, length_struct={"input_ids": seq_len, "loss_mask": seq_len},
        num_packing_bins=batch_size, seed=seed, shuffle_bins=shuffle)
    return ds.batch(batch_size, drop_remainder=drop_remainder).map(_rename)
