"""Minimal safetensors reading (memory-mapped, lazily sliced) and streaming writing.

The format: an 8-byte little-endian header length, a JSON header mapping each
tensor name to ``{dtype, shape, data_offsets}`` (offsets relative to the end of
the header), then the raw little-endian bytes. Reading through ``np.memmap``
touches only the bytes of the slices asked for, so a device shard can be read
without loading the whole tensor; bfloat16 and float8 come from ``ml_dtypes``.
Writing streams one tensor at a time into a temporary file that is renamed into
place at the end, so an interrupted write never leaves a truncated file under
the final name.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(ValueError):
    """A safetensors file that cannot be read (names the file and tensor)."""


class TensorEntry:
    __slots__ = ("file", "name", "dtype", "shape", "start", "end")

    def __init__(self, file, name, dtype, shape, start, end):
        self.file, self.name, self.dtype, self.shape = file, name, dtype, tuple(shape)
        self.start, self.end = start, end


class SafetensorsFile:
    """One ``.safetensors`` file, memory-mapped. ``get(name)`` is a lazy view."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise SafetensorsError(f"{self.path}: file too short to be safetensors")
                (n,) = struct.unpack("<Q", raw)
                if n > size - 8:
                    raise SafetensorsError(f"{self.path}: header length {n} exceeds file size")
                header = json.loads(f.read(n))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{self.path}: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: header is a JSON {type(header).__name__}, "
                                   "expected an object of tensors")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.entries: dict[str, TensorEntry] = {}
        for name, info in header.items():
            try:
                dtype = DTYPES[info["dtype"]]
                shape = [int(s) for s in info["shape"]]
                start, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as e:
                raise SafetensorsError(f"{self.path}: tensor '{name}': bad header entry "
                                       f"{info!r} ({e})") from None
            expect = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if min(shape, default=0) < 0 or not 0 <= start <= end:
                raise SafetensorsError(f"{self.path}: tensor '{name}': data_offsets "
                                       f"{start}..{end} / shape {shape} are not valid")
            if end - start != expect or self.data_start + end > size:
                raise SafetensorsError(
                    f"{self.path}: tensor '{name}': data_offsets {start}..{end} do not fit "
                    f"shape {shape} {info['dtype']} in a file of {size} bytes (truncated?)")
            self.entries[name] = TensorEntry(self.path, name, dtype, shape, start, end)
        spans = sorted((e.start, e.end, e.name) for e in self.entries.values() if e.end > e.start)
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise SafetensorsError(f"{self.path}: tensors '{a}' and '{b}' overlap in the "
                                       "data (damaged or hand-made header)")
        self._mm: np.memmap | None = None

    def get(self, name: str) -> np.ndarray:
        e = self.entries[name]
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        buf = self._mm[self.data_start + e.start:self.data_start + e.end]
        return buf.view(e.dtype).reshape(e.shape)


def dtype_name(dtype) -> str:
    return _NAMES[np.dtype(dtype)]


def write_safetensors(path: str | os.PathLike,
                      tensors: Iterable[tuple[str, tuple[int, ...], np.dtype,
                                              Callable[[], np.ndarray]]],
                      metadata: dict[str, str] | None = None, *, write: bool = True) -> int:
    """Writes ``(name, shape, dtype, produce)`` tensors in order; returns bytes written.

    ``produce()`` is called once per tensor, just before its bytes are written,
    so only one tensor is held in host memory at a time. With ``write=False``
    the producers still run (every process of a multi-host job must take part
    in gathering) but nothing is written.
    """
    tensors = list(tensors)
    header: dict = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, shape, dtype, _ in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": dtype_name(dtype), "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    f = open(tmp, "wb") if write else None
    try:
        if f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
        for name, shape, dtype, produce in tensors:
            arr = np.ascontiguousarray(produce(), dtype=dtype)
            if arr.shape != tuple(shape):
                raise ValueError(f"{path}: tensor '{name}' has shape {arr.shape}, "
                                 f"header says {tuple(shape)}")
            if f:
                f.write(arr.reshape(-1).view(np.uint8).data)
        if f:
            f.close()
            os.replace(tmp, path)
    except BaseException:
        if f:
            f.close()
            os.unlink(tmp)
        raise
    return 8 + len(blob) + offset
