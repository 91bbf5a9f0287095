"""Log-likelihoods of continuations given contexts, as lm-evaluation-harness computes them.

Requests follow lm-eval's ``HFLM`` exactly:

* ``encode_pair``: trailing whitespace of the context moves to the front of the
  continuation; ``whole = encode(context + continuation)``, ``ctx = encode(context)``,
  the continuation's ids are ``whole[len(ctx):]`` (not the continuation encoded alone);
  ``encode`` adds BOS when asked (lm-eval's default follows the tokenizer: BOS for
  Llama-3 and Mistral);
* the model input is ``(ctx + cont)[-(max_length + 1):][:-1]`` (an input longer than the
  model's window keeps its end); the score is the sum of the continuation tokens'
  log-probabilities, ``is_greedy`` whether each was the argmax.

Scoring (``loglikelihoods``): requests whose model input is the same (the choices of a
question whose continuations are one token, as letter answers are) share one row; rows
are sorted by length, padded to a power-of-two length and a fixed batch size (so few
shapes compile), and the vocabulary projection runs only at the positions scored. On a
mesh, rows are split over the batch axes like training batches.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..models import ModelConfig
from ..models.decoder import forward_hidden, lm_head_kernel
from ..parallel.sharding import batch_divisor, constrain


@dataclasses.dataclass
class Request:
    context: str
    continuation: str
    ctx_ids: list[int]
    cont_ids: list[int]


class Encoder:
    """lm-eval's ``tok_encode``: the tokenizer's ids, after BOS when ``add_bos``, unless the
    string already starts with the BOS token's text."""

    def __init__(self, tokenizer, add_bos: bool):
        self.tokenizer, self.add_bos = tokenizer, bool(add_bos)
        if self.add_bos and tokenizer.bos_id is None:
            raise ValueError(f"add_bos=true, but tokenizer {tokenizer.name!r} has no BOS token")
        hf = getattr(tokenizer, "hf", None)
        # A Hugging Face tokenizer encodes as lm-eval calls it (special-token strings in
        # the text are matched as special tokens); the built-in ones as they train.
        self._encode = ((lambda s: hf.encode(s, add_special_tokens=False)) if hf is not None
                        else tokenizer.encode)
        self.bos_text = tokenizer.decode([tokenizer.bos_id]) if tokenizer.bos_id is not None \
            else None

    def __call__(self, text: str) -> list[int]:
        ids = list(self._encode(text))
        if self.add_bos and not (self.bos_text and text.startswith(self.bos_text)):
            ids = [self.tokenizer.bos_id] + ids
        return ids


def tokenizer_adds_bos(tokenizer) -> bool:
    """What current lm-eval does by default (``add_bos_token=None``): whatever the
    tokenizer's own ``encode`` adds; for medjax's built-in Llama-3 and Mistral tokenizers,
    BOS (as their Hugging Face tokenizers do)."""
    hf = getattr(tokenizer, "hf", None)
    if hf is not None:
        ids = hf.encode("a")
        return bool(ids) and hf.bos_token_id is not None and ids[0] == hf.bos_token_id
    return tokenizer.bos_id is not None


def encode_pair(encode: Encoder, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair`` (a causal model); an empty context is BOS (or EOS)."""
    if not context:
        tok = encode.tokenizer
        prefix = tok.bos_id if tok.bos_id is not None else tok.eos_id
        return [prefix], encode.__class__(tok, False)(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    ctx = encode(context)
    return ctx, whole[len(ctx):]


def make_requests(encode: Encoder, docs, delimiter: str) -> list[list[Request]]:
    """One request per choice of each document (``delimiter + choice`` after its context)."""
    out = []
    for doc in docs:
        rows = []
        for choice in doc.choices:
            ctx, cont = encode_pair(encode, doc.context, delimiter + choice)
            if not cont:
                raise ValueError(f"document {doc.index}: choice {choice!r} encodes to no tokens")
            if not ctx:  # lm-eval asserts the same
                raise ValueError(f"document {doc.index}: the context {doc.context!r} encodes "
                                 "to no tokens (use --add_bos=true or a non-blank prompt)")
            rows.append(Request(doc.context, delimiter + choice, ctx, cont))
        out.append(rows)
    return out


def _bucket(n: int, minimum: int, maximum: int | None = None) -> int:
    b = max(minimum, 1 << max(n - 1, 0).bit_length())
    return min(b, maximum) if maximum else b


@functools.partial(jax.jit, static_argnames=("config",))
def _score_rows(config: ModelConfig, params, ids_bt, pos_bp, tok_bp):
    """Log-probability of token ``tok_bp`` after position ``pos_bp`` of each row, and
    whether it was the argmax there: the LM head only at those positions."""
    hidden = forward_hidden(config, params, ids_bt)
    h_bpd = jnp.take_along_axis(hidden, pos_bp[..., None], axis=1)
    kernel = lm_head_kernel(config, params).astype(h_bpd.dtype)
    logits = jnp.einsum("bpd,dv->bpv", h_bpd, kernel, preferred_element_type=jnp.float32)
    target = jnp.take_along_axis(logits, tok_bp[..., None], axis=-1)[..., 0]
    logp = target - jax.nn.logsumexp(logits, axis=-1)
    # Replicated, so that every process of a multi-host run can read the scores.
    return (constrain(logp, (None, None)),
            constrain(jnp.argmax(logits, axis=-1) == tok_bp, (None, None)))


def loglikelihoods(config: ModelConfig, params, requests: list[Request], *, max_length: int,
                   batch_size: int = 8, progress=None) -> list[tuple[float, bool]]:
    """(sum of log-probs, is_greedy) per request, in order (module docstring).
    ``progress(done_requests)`` is called after each batch."""
    rows: dict[tuple, list] = {}  # model input -> [(request index, first position)]
    for i, r in enumerate(requests):
        if len(r.cont_ids) > max_length:
            raise ValueError(f"a continuation of {len(r.cont_ids)} tokens is longer than the "
                             f"model's window ({max_length})")
        whole = (r.ctx_ids + r.cont_ids)[-(max_length + 1):]
        inp = tuple(whole[:-1])
        rows.setdefault(inp, []).append((i, len(inp) - len(r.cont_ids)))
    order = sorted(rows, key=lambda k: -len(k))
    batch = max(1, batch_size)
    batch += -batch % batch_divisor()
    results: list = [None] * len(requests)
    done = 0
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        t = _bucket(max(len(k) for k in chunk), 16, None)
        slots = [[(first + j, requests[i].cont_ids[j], i) for i, first in rows[k]
                  for j in range(len(requests[i].cont_ids))] for k in chunk]
        p = _bucket(max(len(s) for s in slots), 4)
        ids = np.zeros((batch, t), np.int32)
        pos = np.zeros((batch, p), np.int32)
        tok = np.zeros((batch, p), np.int32)
        for b, (k, s) in enumerate(zip(chunk, slots)):
            ids[b, :len(k)] = k
            pos[b, :len(s)] = [x[0] for x in s]
            tok[b, :len(s)] = [x[1] for x in s]
        logp, greedy = jax.device_get(_score_rows(config, params, jnp.asarray(ids),
                                                  jnp.asarray(pos), jnp.asarray(tok)))
        for b, s in enumerate(slots):
            for q, (_, _, i) in enumerate(s):
                ll, g = results[i] or (0.0, True)
                results[i] = (ll + float(logp[b, q]), g and bool(greedy[b, q]))
        done += sum(len(rows[k]) for k in chunk)
        if progress is not None:
            progress(done)
    return results


class Progress:
    """A one-line progress bar on stderr: questions done, total and questions/s."""

    def __init__(self, name: str, questions: int, requests: int, enabled: bool = True):
        import sys
        self.name, self.q, self.r = name, questions, requests
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def __call__(self, done_requests: int) -> None:
        if not self.enabled:
            return
        import sys
        q = self.q * done_requests // max(self.r, 1)
        rate = q / max(time.perf_counter() - self.start, 1e-9)
        width = 30
        fill = width * done_requests // max(self.r, 1)
        sys.stderr.write(f"\r{self.name}: [{'#' * fill}{'.' * (width - fill)}] {q}/{self.q} "
                         f"questions, {rate:.1f} questions/s")
        sys.stderr.flush()
        if done_requests >= self.r:
            sys.stderr.write("\n")
