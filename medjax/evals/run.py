"""Evaluate a model on multiple-choice tasks: lm-eval's metrics, groups and sample logs.

``evaluate(config, params, tokenizer, tasks, groups, ...)`` scores every task and returns
lm-eval-shaped results: ``{"results": {task: {"acc,none", "acc_stderr,none", ...}},
"groups": {...}, "n-samples": ..., "config": ...}`` plus, per task, the per-question
records of ``--log_samples`` (``samples``).

Metrics as lm-eval computes them: ``acc`` (argmax of the summed log-likelihood),
``acc_norm`` (argmax of log-likelihood / the choice's length in characters), each with
the standard error of the mean (sample standard deviation / sqrt(n)); a group's ``acc``
is the size-weighted mean of its tasks' and its standard error the pooled one.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from .score import Encoder, Progress, loglikelihoods, make_requests
from .tasks import Task


def mean_stderr(values) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def pooled_stderr(stderrs, sizes) -> float:
    """lm-eval's ``pooled_sample_stderr`` (a group weighted by size)."""
    var = sum((n - 1) * s ** 2 * n for s, n in zip(stderrs, sizes)) / (sum(sizes) - len(sizes))
    return math.sqrt(var / sum(sizes))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def score_task(config, params, encode: Encoder, task: Task, *, max_length: int,
               limit: int | None = None, batch_size: int = 8, progress: bool = True):
    """(metrics {"acc": [...], "acc_norm": [...]}, samples) for one task."""
    docs = task.load(limit)
    per_doc = make_requests(encode, docs, task.target_delimiter)
    flat = [r for rows in per_doc for r in rows]
    bar = Progress(task.name, len(docs), len(flat), progress)
    lls = loglikelihoods(config, params, flat, max_length=max_length, batch_size=batch_size,
                         progress=bar)
    metrics = {m: [] for m in task.metrics}
    samples = []
    k = 0
    for doc, rows in zip(docs, per_doc):
        res = lls[k:k + len(rows)]
        k += len(rows)
        ll = np.array([r[0] for r in res])
        lengths = np.array([float(len(c)) for c in doc.choices])
        values = {"acc": float(np.argmax(ll) == doc.gold),
                  "acc_norm": float(np.argmax(ll / lengths) == doc.gold)}
        for m in task.metrics:
            metrics[m].append(values[m])
        samples.append({
            "doc_id": doc.index, "doc": doc.raw, "target": doc.target, "gold": doc.gold,
            "arguments": [[r.context, r.continuation] for r in rows],
            "resps": [[[x[0], x[1]]] for x in res],
            "filtered_resps": [[x[0], x[1]] for x in res],
            "filter": "none", "metrics": list(task.metrics),
            "doc_hash": _hash(json.dumps(doc.raw, indent=2, ensure_ascii=False, default=str)),
            "prompt_hash": _hash(rows[0].context),
            "target_hash": _hash(str(doc.target)),
            **{m: values[m] for m in task.metrics},
            "context_tokens": len(rows[0].ctx_ids),
        })
    return metrics, samples


def evaluate(config, params, tokenizer, tasks: list[Task], groups: dict, *, add_bos: bool,
             max_length: int, limit: int | None = None, batch_size: int = 8,
             progress: bool = True) -> dict:
    encode = Encoder(tokenizer, add_bos)
    results, samples, sizes = {}, {}, {}
    for task in tasks:
        metrics, samples[task.name] = score_task(
            config, params, encode, task, max_length=max_length, limit=limit,
            batch_size=batch_size, progress=progress)
        row = {"alias": task.name}
        for m, values in metrics.items():
            row[f"{m},none"] = float(np.mean(values))
            row[f"{m}_stderr,none"] = mean_stderr(values)
        results[task.name] = row
        sizes[task.name] = len(samples[task.name])
    group_rows = {}
    for group, members in groups.items():
        members = [m for m in members if m in results]
        ns = [sizes[m] for m in members]
        accs = [results[m]["acc,none"] for m in members]
        errs = [results[m]["acc_stderr,none"] for m in members]
        group_rows[group] = {
            "alias": group, "acc,none": float(np.dot(accs, ns) / sum(ns)),
            "acc_stderr,none": pooled_stderr(errs, ns) if sum(ns) > len(ns) else float("nan"),
            "tasks": members}
    return {"results": results, "groups": group_rows, "n-samples": sizes,
            "config": {"add_bos": bool(add_bos), "max_length": int(max_length),
                       "limit": limit, "num_fewshot": 0},
            "samples": samples}


def table(out: dict) -> str:
    """A Markdown table: task, n, acc ± stderr, acc_norm ± stderr; groups after."""
    lines = ["| task | n | acc | ± | acc_norm | ± |", "|---|---:|---:|---:|---:|---:|"]

    def fmt(row, m):
        if f"{m},none" not in row:
            return "", ""
        return f"{row[f'{m},none']:.4f}", f"{row[f'{m}_stderr,none']:.4f}"

    for name, row in out["results"].items():
        lines.append(f"| {name} | {out['n-samples'][name]} | " + " | ".join(
            [*fmt(row, "acc"), *fmt(row, "acc_norm")]) + " |")
    for name, row in out["groups"].items():
        n = sum(out["n-samples"][t] for t in row["tasks"])
        lines.append(f"| **{name}** ({len(row['tasks'])} tasks) | {n} | " + " | ".join(
            [*fmt(row, "acc"), "", ""]) + " |")
    return "\n".join(lines)
