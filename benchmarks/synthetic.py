"""Synthetic training records with UltraMedical-like lengths, for the benchmarks.

    from synthetic import write_records      # benchmarks/ is the script's directory
    write_records("prefs.jsonl", n=600, scale=4.0, kind="preference")

Lengths follow a spread like UltraMedical's, uniform: prompts 50-600 tokens, responses
50-900, each divided by ``scale`` (so that a CPU can run them). The text is random
medical-sounding words (about 1.3 tokens a word). One record format per record kind
(``medjax.data.formats``; an objective trains on its unit's kind):

  text        {"text"}: one document as long as a prompt and a response together
  chat        {"messages": [user prompt, assistant response]}
  preference  {"prompt", "chosen", "rejected"} (DPO, reward models)
  kto         {"prompt", "completion", "label"} (labels alternate True, False)

The same ``seed`` gives the same file; ``preference`` files are the ones
``benchmarks/dpo_packing.py`` has always written.
"""

from __future__ import annotations

import json

import numpy as np

WORDS = ("patient presents with fever cough dyspnea chest pain history of hypertension "
         "diabetes mellitus treatment dose daily mg renal hepatic function monitoring "
         "first-line therapy contraindicated pregnancy adverse effects include nausea "
         "headache dizziness rash the and of in to is for with on as by").split()

PROMPT = (50, 600)  # tokens, uniform (before dividing by the scale)
RESPONSE = (50, 900)
KINDS = ("text", "chat", "preference", "kto")


def records(n: int, scale: float, kind: str = "preference", seed: int = 0):
    """``n`` records of ``kind`` (module docstring), as dicts."""
    if kind not in KINDS:
        raise ValueError(f"record kind {kind!r}: one of {', '.join(KINDS)}")
    rs = np.random.RandomState(seed)

    def text(tokens: int) -> str:  # about 1.3 tokens per word
        return " ".join(rs.choice(WORDS, max(1, int(tokens / 1.3))))

    def lengths(*spans):
        return [int(rs.uniform(lo, hi) / scale) for lo, hi in spans]

    for i in range(n):
        if kind == "preference":
            p, c, r = lengths(PROMPT, RESPONSE, RESPONSE)
            rec = {"prompt": text(p), "chosen": text(c), "rejected": text(r)}
            if rec["rejected"] == rec["chosen"]:  # only possible for tiny lengths
                rec["rejected"] += " " + WORDS[0]
            yield rec
            continue
        p, c = lengths(PROMPT, RESPONSE)
        if kind == "text":
            yield {"text": text(p + c)}
        elif kind == "chat":
            yield {"messages": [{"role": "user", "content": text(p)},
                                {"role": "assistant", "content": text(c)}]}
        else:
            yield {"prompt": text(p), "completion": text(c), "label": i % 2 == 0}


def write_records(path: str, n: int, scale: float, kind: str = "preference",
                  seed: int = 0) -> None:
    """``records(n, scale, kind, seed)`` as JSONL at ``path``."""
    with open(path, "w") as f:
        for rec in records(n, scale, kind, seed):
            f.write(json.dumps(rec) + "\n")


def write_data(path: str, n: int, scale: float, seed: int = 0) -> None:
    """Preference records (``benchmarks/dpo_packing.py``)."""
    write_records(path, n, scale, "preference", seed)
