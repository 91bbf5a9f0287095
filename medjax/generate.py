"""Autoregressive generation with a KV cache, on the training decoder's parameters.

``generate(config, params, prompts, ...)`` takes token-id prompts of any lengths:

* the prompts are right-padded to a bucket (the next power of two, at least 16) so a
  new prompt length does not recompile; each row keeps its own length, and row ``r``'s
  token at position ``p`` sits in cache slot ``p`` (``models.decoder.forward_cached``):
  a padded slot lies after the row's tokens and is never attended to;
* one prefill pass over the prompts fills the cache (values ``[layers, rows, kv_heads,
  cache_len, head_dim]``, keys with the last two swapped; rows over the mesh's batch
  axes, KV heads over tensor; rows are padded with filler rows to divide evenly) and
  gives each row's first token; then a jitted
  ``lax.while_loop`` feeds one token per row per step until every row has stopped
  (EOS / end of turn / ``stop_ids``) or ``max_new_tokens``;
* greedy (``temperature=0``) or sampling with ``temperature``, ``top_k`` and ``top_p``
  from a ``seed``; each sampled token's log-probability under the model (the raw
  logits, temperature 1) comes back too, for the online preference loop.

Mistral's sliding window is applied by masking cache slots older than the window.

  python -m medjax.generate --model=DIR (--prompt=TEXT | --prompts=FILE.jsonl) [options]

DIR: a Hugging Face directory, a medjax model checkpoint or a medjax.train workdir
(its newest checkpoint). Prompts go through the model's chat template (the one it
was trained with, or the tokenizer directory's own) unless --raw; a prompts file has
one JSON object per line: {"prompt": "text"}, {"prompt": [messages]} or
{"messages": [...]} (ending with a user turn). Generation stops at the tokenizer's
EOS, the template's end of turn, or --max_new_tokens; --out writes JSONL with the
completion, its token ids and log-probs, and the finish reason.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .models import ModelConfig
from .models.decoder import empty_cache, forward_cached, split_layers, unstack_layers
from .parallel.sharding import batch_divisor, constrain


@dataclasses.dataclass
class Generation:
    """One row's result: the new token ids (ending with the stop token when one was
    hit), why it ended ("stop" or "length"), and each token's log-probability."""
    ids: list[int]
    finish_reason: str
    logprobs: list[float]


# Keys [layers, rows, kv_heads, head_dim, slots], values [.., slots, head_dim].
CACHE_AXES = (("layers", "batch", "kv_heads", "head_dim", "length"),
              ("layers", "batch", "kv_heads", "length", "head_dim"))


def bucket(n: int, minimum: int = 16) -> int:
    """The next power of two >= n (and >= minimum): the padded prompt length."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def argmax(x_bv: jax.Array) -> jax.Array:
    """``jnp.argmax(x, -1)`` (the first maximal id; a NaN counts as the maximum) as two
    plain reductions, a max and a min over the ids that reach it: XLA's CPU lowering of
    the fused (value, index) reduction ran 1 ms a decode step for 16 rows x 32,000 ids,
    more than the rest of the sampling."""
    top = jnp.max(x_bv, axis=-1, keepdims=True)
    ids = jax.lax.broadcasted_iota(jnp.int32, x_bv.shape, 1)
    hit = (x_bv == top) | jnp.isnan(x_bv)
    return jnp.min(jnp.where(hit, ids, x_bv.shape[-1] - 1), axis=-1).astype(jnp.int32)


def sample_logits(logits_bv: jax.Array, key: jax.Array, *, temperature: float, top_k: int,
                  top_p: float) -> jax.Array:
    """Token ids [rows] from float32 logits: argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted to the top_k tokens and to the smallest set
    whose probability reaches top_p."""
    if temperature == 0.0:
        return argmax(logits_bv)
    x = logits_bv / temperature
    if top_k:
        kth = jax.lax.top_k(x, top_k)[0][:, -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    if top_p < 1.0:
        order = jnp.argsort(-x, axis=-1)
        sorted_x = jnp.take_along_axis(x, order, axis=-1)
        probs = jax.nn.softmax(sorted_x, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ahead
        sorted_x = jnp.where(before < top_p, sorted_x, -jnp.inf)  # the first always stays
        x = jnp.full_like(x, -jnp.inf).at[jnp.arange(x.shape[0])[:, None], order].set(sorted_x)
    return draw(x, key)


def draw(x_bv: jax.Array, key: jax.Array, block: int = 512) -> jax.Array:
    """A token id per row drawn from softmax(x) (``-inf`` entries never drawn), exactly, in
    two inverse-CDF steps: a block of ``block`` ids by the blocks' total probability, then
    an id within it. Two uniforms per row instead of ``jax.random.categorical``'s Gumbel
    noise for every id: 11x faster for 128 rows of a 128,256-id vocabulary on the 2-core
    CPU (benchmarks/sampling.py, RESULTS.md)."""
    rows, v = x_bv.shape
    block = min(block, v)
    pad = -v % block
    x = jnp.pad(x_bv, ((0, 0), (0, pad)), constant_values=-jnp.inf) if pad else x_bv
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True)).reshape(rows, -1, block)
    k_block, k_id = jax.random.split(key)

    def first_above(cdf, k):  # the first index whose cumulative mass exceeds u * total
        u = jax.random.uniform(k, (rows, 1), jnp.float32) * cdf[:, -1:]
        return jnp.minimum(jnp.sum(cdf <= u, axis=-1), cdf.shape[-1] - 1)

    b = first_above(jnp.cumsum(e.sum(-1), axis=-1), k_block)
    within = jnp.take_along_axis(e, b[:, None, None], axis=1)[:, 0]
    i = first_above(jnp.cumsum(within, axis=-1), k_id)
    return (b * block + i).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "temperature",
                                             "top_k", "top_p", "stop_ids", "on_token"))
def _generate(config: ModelConfig, params, ids_bt, lengths_b, key, *, max_new_tokens: int,
              temperature: float, top_k: int, top_p: float, stop_ids: tuple[int, ...],
              on_token=None):
    b, t = ids_bt.shape
    cache_len = t + max_new_tokens
    # Under a mesh: rows over the batch axes (data, fsdp), KV heads over tensor.
    cache = tuple(constrain(c, axes)
                  for c, axes in zip(empty_cache(config, b, cache_len), CACHE_AXES))
    if not config.scan_layers or isinstance(params["layers"], (list, tuple)):
        params, cache = unstack_layers(params, cache)  # split once, outside the decode loop
    last_pos = jnp.maximum(lengths_b - 1, 0)[:, None]  # each row's last prompt token
    logits, cache = forward_cached(config, params, ids_bt, jnp.zeros((b,), jnp.int32), cache,
                                   logits_at=last_pos)
    last = logits[:, 0]
    stops = jnp.asarray(stop_ids if stop_ids else (-1,), jnp.int32)
    sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k,
                               top_p=top_p)

    def pick(logits_bv, k):
        token = sample(logits_bv, k)
        chosen = jnp.take_along_axis(logits_bv, token[:, None], axis=1)[:, 0]
        return token, chosen - jax.nn.logsumexp(logits_bv, axis=-1)  # its log-prob

    key, sub = jax.random.split(key)
    token, logp = pick(last, sub)
    out = jnp.full((b, max_new_tokens), -1, jnp.int32)
    out_logp = jnp.zeros((b, max_new_tokens), jnp.float32)
    done = lengths_b == 0  # filler rows (to divide over the mesh) are done from the start
    stopped = jnp.zeros((b,), bool)

    def cond(carry):
        i, _, _, _, _, done, *_ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, token, logp, cache, pos, done, stopped, out, out_logp, key = carry
        out = out.at[:, i].set(jnp.where(done, -1, token))
        out_logp = out_logp.at[:, i].set(jnp.where(done, 0.0, logp))
        if on_token is not None:  # streaming: each step's tokens to the host, in order
            from jax.experimental import io_callback
            io_callback(on_token, None, out[:, i], ordered=True)
        hit = ~done & jnp.isin(token, stops)
        stopped, done = stopped | hit, done | hit
        logits, cache = forward_cached(config, params, token[:, None], pos, cache)
        key, sub = jax.random.split(key)
        token, logp = pick(logits[:, 0], sub)
        return i + 1, token, logp, cache, pos + 1, done, stopped, out, out_logp, key

    carry = (jnp.int32(0), token, logp, cache, lengths_b, done, stopped, out, out_logp, key)
    *_, stopped, out, out_logp, _ = jax.lax.while_loop(cond, body, carry)
    # Replicated, so that every process of a multi-host run can read the tokens.
    return tuple(constrain(x, (None,) * x.ndim) for x in (out, out_logp, stopped))


def generate(config: ModelConfig, params, prompts: list[list[int]], *,
             max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, stop_ids=(), n: int = 1,
             on_token=None) -> list[Generation]:
    """``n`` generations for each prompt (token ids), in prompt order: ``[p0 x n, p1 x n,
    ...]``. ``stop_ids`` end a row (EOS, the template's end of turn, your own).
    ``on_token(tokens)`` (streaming) is called on the host with each step's token of
    every row (-1 for a row that has stopped) while the loop runs."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0:
        raise ValueError(f"temperature={temperature}, top_k={top_k}, top_p={top_p}: need "
                         "temperature >= 0, top_k >= 0 and 0 < top_p <= 1")
    rows = [list(p) for p in prompts for _ in range(n)]
    t = bucket(max(len(p) for p in rows))
    padded = -len(rows) % batch_divisor()  # filler rows, dropped from the results
    ids = np.zeros((len(rows) + padded, t), np.int32)
    for r, p in enumerate(rows):
        ids[r, :len(p)] = p
    lengths = np.array([len(p) for p in rows] + [0] * padded, np.int32)
    out, logp, stopped = jax.device_get(_generate(
        config, params, jnp.asarray(ids), jnp.asarray(lengths), jax.random.key(seed),
        max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_k=int(top_k),
        top_p=float(top_p), stop_ids=tuple(int(s) for s in stop_ids), on_token=on_token))
    results = []
    for r in range(len(rows)):
        k = int(np.sum(out[r] >= 0))
        results.append(Generation(out[r, :k].tolist(), "stop" if stopped[r] else "length",
                                  logp[r, :k].tolist()))
    return results


# --------------------------------------------------------------------------- CLI


def _prompt_ids(tokenizer, template, prompt, raw: bool) -> list[int]:
    if isinstance(prompt, str) and (raw or template is None):
        bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
        return bos + tokenizer.encode(prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if template is None:
        raise ValueError("the model records no chat template: pass --template=llama3|mistral|"
                         "alpaca|hf, or --raw for plain text prompts")
    return template.encode_prompt(messages)


class _Stream:
    """Prints one row's text as its tokens arrive (decoding all so far, printing what is
    new, so multi-token characters come out whole)."""

    def __init__(self, tokenizer, stop):
        self.tok, self.stop, self.ids, self.shown = tokenizer, set(stop), [], ""

    def __call__(self, tokens):
        import sys
        token = int(tokens[0])
        if token < 0 or token in self.stop:
            return
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        if text.startswith(self.shown) and not text.endswith("\ufffd"):
            sys.stdout.write(text[len(self.shown):])
            sys.stdout.flush()
            self.shown = text

    def __hash__(self):
        return id(self)


def _read_prompts(path: str) -> list:
    import json
    prompts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: malformed JSON ({e})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object with 'prompt' or "
                                 f"'messages', got {type(record).__name__}")
            field = "prompt" if "prompt" in record else "messages"
            prompt = record.get(field)
            if prompt is not None and not isinstance(prompt, (str, list)):
                raise ValueError(f"{path}:{n}: field {field!r}: expected text or a list of "
                                 f"messages, got {type(prompt).__name__}")
            if not prompt:
                raise ValueError(f"{path}:{n}: field 'prompt' (text or messages) or "
                                 "'messages' is missing or empty")
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def main(argv) -> None:
    import json
    import sys

    from absl import flags

    from .data.hf_export import end_of_turn
    from .data.model_tools import model_data_tools
    from .models.load import load
    f = flags.FLAGS
    del argv
    if bool(f.prompt) == bool(f.prompts):
        sys.exit("medjax.generate: error: give --prompt=TEXT or --prompts=FILE.jsonl")
    try:
        overrides = {"dtype": f.dtype} if f.dtype else {}
        model = load(f.model, **overrides)
        tokenizer, template = model_data_tools(
            model, f.model, f.tokenizer, f.template,
            warn=lambda m: print(f"medjax.generate: warning: {m}", file=sys.stderr))
        if tokenizer is None:
            raise ValueError(f"{f.model}: no tokenizer to encode prompts with; pass "
                             "--tokenizer=llama3|mistral|DIR")
        prompts = [f.prompt] if f.prompt else _read_prompts(f.prompts)
        ids = [_prompt_ids(tokenizer, template, p, f.raw) for p in prompts]
        stop = [i for i in (tokenizer.eos_id, end_of_turn(template)) if i is not None]
        stream = _Stream(tokenizer, stop) if len(ids) == 1 and f.n == 1 and not f.out else None
        # The unrolled decode loop on per-layer weights (about 1.2x the layer scan's speed
        # at batch 16 on the CPU, benchmarks/generate.py), split here without a copy.
        params, model.params = split_layers(model.params), None
        results = generate(model.config, params, ids, max_new_tokens=f.max_new_tokens,
                           temperature=f.temperature, top_k=f.top_k, top_p=f.top_p,
                           seed=f.seed, stop_ids=tuple(stop), n=f.n, on_token=stream)
    except (OSError, ValueError) as e:
        sys.exit("medjax.generate: error: " + " ".join(str(e).split()))
    if stream is not None:  # already printed as it came
        print(flush=True)
        return
    out = open(f.out, "w", encoding="utf-8") if f.out else None
    for k, r in enumerate(results):
        prompt = prompts[k // f.n]
        text = tokenizer.decode([i for i in r.ids if i not in stop])
        if out:
            out.write(json.dumps({"prompt": prompt, "completion": text, "sample": k % f.n,
                                  "finish_reason": r.finish_reason,
                                  "ids": r.ids, "logprobs": r.logprobs}) + "\n")
        else:
            if len(results) > 1:
                print(f"--- prompt {k // f.n}" + (f", sample {k % f.n}" if f.n > 1 else ""))
            print(text)
    if out:
        out.close()
        print(f"wrote {len(results)} completions to {f.out}")


def _define_flags():
    from absl import flags
    flags.DEFINE_string("model", None, "HF directory, medjax checkpoint or training workdir.")
    flags.DEFINE_string("prompt", None, "One prompt (a user message, or plain text with --raw).")
    flags.DEFINE_string("prompts", None, "A JSONL file of prompts (see above).")
    flags.DEFINE_integer("max_new_tokens", 256, "Most new tokens per completion.")
    flags.DEFINE_float("temperature", 0.0, "0: greedy; else sampling at this temperature.")
    flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0: all).")
    flags.DEFINE_float("top_p", 1.0, "Sample among the most likely tokens reaching this mass.")
    flags.DEFINE_integer("n", 1, "Completions per prompt.")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_string("out", None, "Write JSONL (prompt, completion, ids, logprobs) here.")
    flags.DEFINE_bool("raw", False, "Plain text prompts: no chat template.")
    flags.DEFINE_string("tokenizer", None, "Override: llama3, mistral or a directory.")
    flags.DEFINE_string("template", None, "Override: llama3, mistral, alpaca or hf.")
    flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the "
                      "model's).")
    flags.mark_flag_as_required("model")


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
