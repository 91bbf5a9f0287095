"""Random-access record sources: JSONL (also .jsonl.gz), JSON arrays (.json), CSV,
Parquet, Arrow (.arrow; a Hugging Face ``datasets`` ``save_to_disk`` folder is read as
its .arrow files), ArrayRecord.

A source's item ``i`` is ``(where, record)``: ``where`` is ``"file:line"`` (or
``"file#row"``), ``record`` the decoded dict, or a ``DataError`` instance when
the bytes are not a JSON object (bad JSON, bad UTF-8), so that the caller can
decide to stop or to skip and count. Files are indexed once and read lazily,
so a large corpus is never loaded whole (gzip files excepted: they cannot seek).
Sources are read from several threads at once (Grain's prefetch) and are
thread-safe.
ArrayRecord records are UTF-8 JSON objects, one per record.
"""

from __future__ import annotations

import bisect
import glob
import gzip
import json
import os
import threading
import zlib
from typing import Sequence


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
        for m in matches:
            files.extend(saved_dataset_files(m) if os.path.isdir(m) else [m])
    if not files:
        raise DataError("no data sources given")
    return files


def _decode(raw: bytes, where: str):
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return DataError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})")
    except json.JSONDecodeError as e:
        return DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})")
    if not isinstance(record, dict):
        return DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


class JsonlSource:
    def __init__(self, path: str):
        self.path = path
        self._lines: list[bytes] | None = None
        self._index: list[tuple[int, int]] = []  # (line number, byte offset or line index)
        if path.endswith(".gz"):
            try:
                with gzip.open(path, "rb") as fh:
                    self._lines = fh.read().splitlines()
            except (OSError, EOFError, zlib.error) as e:  # not gzip, truncated, corrupt
                raise DataError(f"{path}: not a readable gzip file ({e})") from None
            self._index = [(n + 1, n) for n, line in enumerate(self._lines) if line.strip()]
            return
        with open(path, "rb") as fh:
            offset = 0
            for n, line in enumerate(fh, 1):
                if line.strip():
                    self._index.append((n, offset))
                offset += len(line)

    def __len__(self):
        return len(self._index)

    def __getitem__(self, i):
        lineno, pos = self._index[i]
        if self._lines is not None:
            raw = self._lines[pos]
        else:
            with open(self.path, "rb") as fh:
                fh.seek(pos)
                raw = fh.readline()
        where = f"{self.path}:{lineno}"
        return where, _decode(raw, where)


def saved_dataset_files(path: str) -> list[str]:
    """The .arrow files of a ``datasets.Dataset.save_to_disk`` folder, in order."""
    state = os.path.join(path, "state.json")
    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        splits = sorted(d for d in os.listdir(path)
                        if os.path.exists(os.path.join(path, d, "state.json")))
        split = "train" if "train" in splits or not splits else splits[0]
        raise DataError(f"{path}: a saved DatasetDict with splits {splits}; name one, e.g. "
                        f"{os.path.join(path, split)}")
    if not os.path.exists(state):
        raise DataError(f"{path}: a directory, but not a saved Hugging Face dataset (no "
                        "state.json); name its files or a glob such as DIR/*.jsonl")
    try:
        with open(state) as fh:
            names = [f["filename"] for f in json.load(fh)["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{state}: not a datasets state file ({e})") from None
    return [os.path.join(path, n) for n in names]


class ArrowSource:
    """An Arrow IPC file (stream or file format, as ``datasets`` writes them), memory-mapped;
    each row a record."""

    def __init__(self, path: str):
        import pyarrow as pa
        self.path = path
        try:
            source = pa.memory_map(path)
            try:
                self._table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                self._table = pa.ipc.open_file(pa.memory_map(path)).read_all()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable Arrow file ({e})") from None

    def __len__(self):
        return self._table.num_rows

    def __getitem__(self, i):
        return f"{self.path}#{i}", self._table.slice(i, 1).to_pylist()[0]


class ParquetSource:
    def __init__(self, path: str):
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow is a dependency
            raise DataError(f"{path}: reading Parquet needs pyarrow") from None
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types; name the file
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        self._starts = []
        n = 0
        for g in range(self._file.num_row_groups):
            self._starts.append(n)
            n += self._file.metadata.row_group(g).num_rows
        self._len = n
        self._cache: tuple[int, list[dict]] | None = None
        # Grain reads items from several threads; a ParquetFile is not thread-safe.
        self._lock = threading.Lock()

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        g = bisect.bisect_right(self._starts, i) - 1
        with self._lock:
            if self._cache is None or self._cache[0] != g:
                self._cache = (g, self._file.read_row_group(g).to_pylist())
            rows = self._cache[1]
        return f"{self.path}#{i}", rows[i - self._starts[g]]


class ArrayRecordSource:
    def __init__(self, path: str):
        from array_record.python.array_record_data_source import ArrayRecordDataSource
        self.path = path
        self._src = ArrayRecordDataSource([path])

    def __len__(self):
        return len(self._src)

    def __getitem__(self, i):
        where = f"{self.path}#{i}"
        return where, _decode(self._src[i], where)


class ListSource:
    """Records read whole into memory: a ``.json`` file holding one array of objects (or
    JSON Lines under that name), or a ``.csv`` file with a header row (``where`` is the
    array index, or the CSV line)."""

    def __init__(self, path: str):
        self.path = path
        if path.endswith(".csv"):
            self._items = self._csv(path)
            return
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip()
        if not head.startswith(b"["):  # JSON Lines named .json
            src = JsonlSource(path)
            self._items = [src[i] for i in range(len(src))]
            return
        try:
            with open(path, encoding="utf-8") as fh:
                records = json.load(fh)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column "
                            f"{e.colno})") from None
        if not isinstance(records, list):
            raise DataError(f"{path}: a .json file must hold an array of records (or JSON "
                            "Lines)")
        self._items = [(f"{path}[{i}]", r if isinstance(r, dict) else DataError(
            f"{path}[{i}]: expected a JSON object, got {type(r).__name__}"))
            for i, r in enumerate(records)]

    @staticmethod
    def _csv(path: str) -> list:
        import csv
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise DataError(f"{path}: a CSV file needs a header row naming its fields")
            return [(f"{path}:{reader.line_num}", row) for row in reader]

    def __len__(self):
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]


def open_file(path: str):
    if path.endswith((".jsonl", ".jsonl.gz")):
        return JsonlSource(path)
    if path.endswith((".json", ".csv")):
        return ListSource(path)
    if path.endswith(".parquet"):
        return ParquetSource(path)
    if path.endswith(".arrow"):
        return ArrowSource(path)
    if path.endswith((".arrayrecord", ".array_record")) or "array_record" in os.path.basename(path):
        return ArrayRecordSource(path)
    raise DataError(f"{path}: unknown file type (expected .jsonl, .jsonl.gz, .json, .csv, "
                    ".parquet, .arrow, .arrayrecord, or a datasets save_to_disk folder)")


class ConcatSource:
    """Several files as one random-access source."""

    def __init__(self, paths: Sequence[str]):
        self.parts = [open_file(p) for p in paths]
        self._starts = []
        n = 0
        for p in self.parts:
            self._starts.append(n)
            n += len(p)
        self._len = n
        if not n:
            raise DataError(f"{', '.join(paths)}: no records (empty dataset)")

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        k = bisect.bisect_right(self._starts, i) - 1
        return self.parts[k][i - self._starts[k]]
