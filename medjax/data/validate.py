"""The validation pass: every record of a source is parsed and checked once, before
training (bad records stop the run with file:line: field, or are skipped and counted),
and the good ones become a random-access source of normalised examples."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

from .formats import KIND, field_map, parse
from .sources import ConcatSource, DataError, expand_sources

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SourceSpec:
    path: str
    weight: float = 1.0
    format: str = ""  # empty: data.format


def source_specs(sources: Any) -> list[SourceSpec]:
    """``data.sources``: a comma-separated string of paths/globs (one source), or a list
    of ``{path, weight, format}`` mappings (a weighted mixture)."""
    if isinstance(sources, str):
        return [SourceSpec(sources)]
    specs = []
    for i, s in enumerate(sources or ()):
        if isinstance(s, str):
            specs.append(SourceSpec(s))
            continue
        s = dict(s)
        unknown = set(s) - {"path", "weight", "format"}
        if unknown or "path" not in s:
            raise DataError(f"data.sources[{i}]: expected keys path, weight, format; got "
                            f"{sorted(s)}")
        try:
            weight = float(s.get("weight", 1.0))
        except (TypeError, ValueError):
            weight = float("nan")
        if not 0 < weight < float("inf"):
            raise DataError(f"data.sources[{i}].weight={s.get('weight')!r}: a mixture weight "
                            "must be a positive number")
        specs.append(SourceSpec(str(s["path"]), weight, str(s.get("format", "") or "")))
    if not specs:
        raise DataError("data.sources is empty")
    return specs


@dataclasses.dataclass
class BadRecords:
    count: int = 0
    total: int = 0
    examples: list = dataclasses.field(default_factory=list)


def held_out(index: int, fraction: float) -> bool:
    """Whether record ``index`` of a source belongs to the ``data.eval_split`` held-out
    fraction: a hash of its index, so the split is the same on every run and process."""
    h = hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(h, "little") < fraction * 2.0 ** 64


class ValidatedSource:
    """A source's records for this process, checked once before training.

    Item ``i`` is the ``i``-th good record's normalised example. ``check(example)``
    may raise (a bad record) or return False (valid but unusable: counted, dropped).
    """

    def __init__(self, spec: SourceSpec, data_cfg, kind: str, process_index: int,
                 process_count: int, check=None, source_number: int = 0, split: str = ""):
        self.source_number = source_number
        self.source = ConcatSource(expand_sources(spec.path))
        self.format = spec.format or data_cfg.format
        self.fields = field_map(data_cfg.get("fields"))
        indices = range(len(self.source))
        if split:  # "train" or "eval": the records in or out of data.eval_split
            indices = [i for i in indices
                       if held_out(i, data_cfg.eval_split) == (split == "eval")]
        indices = indices[process_index::process_count]
        self.bad = BadRecords(total=len(indices))
        self.dropped = BadRecords(total=len(indices))  # valid, but the prompt leaves no room
        self.good: list[int] = []
        for i in indices:
            where, record = self.source[i]
            try:
                fits = self._check(where, record, kind, check)
            except ValueError as e:  # FormatError, DataError, or a template's objection
                msg = str(e) if isinstance(e, DataError) else f"{where}: {e}"
                if data_cfg.on_bad_record == "error":
                    raise DataError(msg + " (data.on_bad_record='skip' skips such records)") \
                        from None
                self.bad.count += 1
                if len(self.bad.examples) < 5:
                    self.bad.examples.append(msg)
                continue
            if not fits:
                self.dropped.count += 1
                if len(self.dropped.examples) < 5:
                    self.dropped.examples.append(where)
                continue
            self.good.append(i)
        if self.bad.count:
            frac = self.bad.count / max(self.bad.total, 1)
            log.warning("%s: skipped %d of %d bad records (%.1f%%); first: %s", spec.path,
                        self.bad.count, self.bad.total, 100 * frac, self.bad.examples)
            if frac > data_cfg.max_bad_fraction:
                raise DataError(f"{spec.path}: {self.bad.count} of {self.bad.total} records are "
                                f"bad ({frac:.1%} > data.max_bad_fraction="
                                f"{data_cfg.max_bad_fraction}); first: {self.bad.examples[:3]}")
        if self.dropped.count:
            log.warning("%s: dropped %d of %d examples whose prompt leaves no room for a "
                        "response within seq_len (first: %s)", spec.path, self.dropped.count,
                        self.dropped.total, self.dropped.examples)
        if not self.good and not indices:
            raise DataError(f"{spec.path}: {len(self.source)} records do not reach data shard "
                            f"{process_index} of {process_count} (every shard reads every "
                            f"{process_count}th record; set --config.data.shards to at most "
                            f"{len(self.source)}, or add records)")
        if not self.good:
            raise DataError(f"{spec.path}: no usable records for data shard {process_index} "
                            f"of {process_count}")

    def _check(self, where, record, kind, check) -> bool:
        """Raises for a bad record; False for a valid one that cannot be used."""
        if isinstance(record, DataError):
            raise record
        fmt, example = parse(record, self.format, self.fields)
        if KIND[fmt] != kind:
            raise DataError(f"{where}: a {fmt!r} record cannot train a {kind!r} objective "
                            "(set data.format or use other data)")
        return check(example) if check is not None else True

    def __len__(self):
        return len(self.good)

    def __getitem__(self, i):
        where, record = self.source[self.good[i]]
        fmt, example = parse(record, self.format, self.fields)
        example["where"] = where
        # A stable id: (source number, record number), e.g. to look up precomputed values.
        example["id"] = (self.source_number << 40) + self.good[i]
        return example


def make_check(kind: str, template, options):
    """The validation pass's per-example check beyond the format (None: nothing more)."""
    if kind == "chat" and getattr(template, "name", "") == "alpaca":
        def check(ex):
            roles = [m["role"] for m in ex["messages"]]
            if "alpaca" not in ex and roles != ["user", "assistant"]:
                raise ValueError(f"the alpaca template takes one user and one assistant "
                                 f"message, got roles {roles}")
            return True
        return check
    if kind in ("preference", "kto"):
        def check(ex):  # the prompt (after max_prompt_length) must leave room for a response
            n = len(template.encode_prompt(ex["prompt"]))
            return min(n, options.max_prompt_length) < options.seq_len
        return check
    return None
