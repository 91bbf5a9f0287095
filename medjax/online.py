"""Iterative online preference learning (UltraMedical / RLHFlow's Online-RLHF loop).

``python -m medjax.train --config=configs/online_dpo.py --workdir=DIR`` runs ``run``: for
each round r, in one process and on one device mesh,

  sample   the current policy (round 0: ``model.init_from``; then the previous round's
           trained policy) writes ``online.samples_per_prompt`` responses to each of the
           round's prompts -> ``round_r/samples.jsonl`` (one line per prompt)
  score    the reward model (``online.reward_model``: a medjax reward workdir or checkpoint,
           or an HF ``*ForSequenceClassification`` directory) scores prompt + response with
           its own tokenizer and template; a response that never reached a stop token loses
           ``online.missing_eot_penalty`` -> ``round_r/scored.jsonl``
  pair     best vs worst (ties dropped) or best vs a random other ->
           ``round_r/pairs.jsonl`` (preference records; KTO: ``round_r/kto.jsonl``, the best
           response desirable and the other undesirable)
  train    an ordinary ``medjax.train`` run of the config's objective on those records in
           ``round_r/train`` (its reference log-probs first: the initial policy's or, with
           ``online.reference=refresh``, the round's starting policy's), starting from the
           round's policy with a fresh optimizer, as Online-RLHF trains each iteration
  held-out the trained policy samples ``online.eval_samples_per_prompt`` responses to each
           held-out prompt (``online.eval_prompts``; the same seed for every policy) and the
           reward model scores them -> ``heldout/policy_k.jsonl`` (k = 0: the initial policy)

Per-round figures go to ``WORKDIR/metrics.jsonl`` (step = round; TensorBoard too) and
``WORKDIR/rounds.jsonl``. Only one model is resident at a time: each phase loads its model
and releases it at the end (the reference log-probs of the DPO objectives are
precomputed, so training holds no reference either unless a frozen one is asked for).

Resuming: the same command continues where a kill left it. A phase's file is complete or
absent (written to a temporary name and renamed), except the samples, which are appended
per chunk of ``online.sample_batch`` prompts and trimmed back to whole chunks; each chunk's
sampling seed is derived from (seed, round, chunk), so resumed and uninterrupted runs write
the same samples, and a sampled chunk is never drawn again. Training resumes from its
checkpoints as any ``medjax.train`` run.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

PAIR_RULES = ("best_vs_worst", "best_vs_random")
REFERENCES = ("initial", "refresh")


# --------------------------------------------------------------------------- config


def add_online_config(c, *, rounds: int = 3) -> None:
    """The ``online.*`` keys (a DPO or KTO config gets them from configs/online_dpo.py)."""
    import ml_collections
    o = c.online = ml_collections.ConfigDict()
    o.rounds = rounds  # rounds of sample -> score -> pair -> train
    # Prompts: files (comma-separated paths/globs) of prompts or conversations in any
    # layout medjax reads ({"prompt": text | messages}, messages, sharegpt, alpaca,
    # prompt_completion, preference, kto); a conversation's last assistant turn is dropped
    o.prompts = ml_collections.FieldReference("", field_type=object)
    o.prompts_per_round = 0  # 0: every prompt each round; N: the next N of a fixed shuffle
    o.eval_prompts = ml_collections.FieldReference("", field_type=object)  # held out ('' none)
    o.eval_samples_per_prompt = 2
    o.samples_per_prompt = 8
    o.temperature = 1.0
    o.top_p = 1.0
    o.top_k = 0
    o.max_new_tokens = 256
    o.sample_batch = 16  # prompts per generation call (x samples_per_prompt rows)
    # A medjax reward workdir / checkpoint, or an HF *ForSequenceClassification directory
    o.reward_model = ""
    o.reward_batch = 32  # rows per scoring call
    o.reward_max_length = 0  # tokens of prompt + response scored (0: seq_len); keeps the end
    o.reward_template = "auto"  # the reward model's own template (auto) | llama3 | mistral | ...
    o.pair_rule = "best_vs_worst"  # best_vs_worst | best_vs_random (ties are dropped)
    o.missing_eot_penalty = 0.0  # subtracted from a response that hit max_new_tokens
    o.reference = "initial"  # initial: the first policy every round | refresh: each round's
    o.steps_per_round = 0  # 0: one epoch of the round's pairs


def check(config) -> None:
    o = config.online
    problems = []
    if o.rounds < 1:
        problems.append(f"online.rounds={o.rounds}: at least 1")
    if o.pair_rule not in PAIR_RULES:
        problems.append(f"online.pair_rule={o.pair_rule!r}: one of {', '.join(PAIR_RULES)}")
    if o.reference not in REFERENCES:
        problems.append(f"online.reference={o.reference!r}: one of {', '.join(REFERENCES)}")
    if o.samples_per_prompt < 2:
        problems.append(f"online.samples_per_prompt={o.samples_per_prompt}: at least 2 "
                        "(pairs are made from one prompt's samples)")
    for key in ("sample_batch", "reward_batch", "max_new_tokens", "eval_samples_per_prompt"):
        if o[key] < 1:
            problems.append(f"online.{key}={o[key]}: at least 1")
    if o.temperature <= 0:
        problems.append(f"online.temperature={o.temperature}: above 0 (greedy samples of one "
                        "prompt would all be the same)")
    if not str(o.prompts).strip():
        problems.append("online.prompts: empty (files of prompts to sample from)")
    if not o.reward_model:
        problems.append("online.reward_model: empty (a reward model: python -m medjax.train "
                        "--config=configs/reward.py --workdir=RM, then online.reward_model=RM)")
    if not config.model.init_from:
        problems.append("model.init_from: empty (the policy to start from, e.g. an SFT "
                        "workdir: python -m medjax.train --config=configs/sft.py "
                        "--workdir=SFT, then model.init_from=SFT)")
    from . import objectives
    unit = objectives.get(config.objective.name)
    if unit.kind not in ("preference", "kto") or unit.head != "lm":
        problems.append(f"objective.name={config.objective.name!r}: online rounds train the "
                        "policy on preference pairs or KTO rows ('dpo' with loss_type "
                        "sigmoid, nca_pair, kto_pair, ..., or 'kto')")
    if problems:
        raise ValueError("; ".join(problems))
    for key in ("reward_model", "init_from"):
        path = o.reward_model if key == "reward_model" else config.model.init_from
        if not os.path.exists(path):
            name = "online.reward_model" if key == "reward_model" else "model.init_from"
            raise ValueError(f"{name}={path!r}: no such file or directory")


# --------------------------------------------------------------------------- prompts


@dataclasses.dataclass
class Prompt:
    index: int  # position in the prompt files (all files, in order)
    where: str  # file:line
    messages: list


def read_prompts(sources, fmt: str = "auto", fields="") -> list[Prompt]:
    """Every record's prompt as a conversation ending with a user turn: ``{"prompt": text or
    messages}``; conversations (messages, sharegpt, alpaca, prompt_completion) up to their
    last user turn; preference / KTO records' prompt. A record without one is an error
    naming its file, line and field."""
    from .data.formats import FormatError, field_map, parse
    from .data.sources import DataError, expand_sources, open_file
    from .data.validate import source_specs
    fields = field_map(fields)
    out = []
    for spec in source_specs(sources):
        for path in expand_sources(spec.path):
            source = open_file(path)
            for i in range(len(source)):
                where, record = source[i]
                if isinstance(record, Exception):
                    raise record
                try:
                    messages = _prompt_of(record, spec.format or fmt, fields, parse)
                except FormatError as e:
                    raise DataError(f"{where}: {e}") from None
                out.append(Prompt(len(out), where, messages))
    if not out:
        raise DataError(f"online.prompts={sources!r}: no records")
    return out


def _prompt_of(record, fmt, fields, parse) -> list:
    from .data.formats import FormatError, _prompt
    if not isinstance(record, dict):
        raise FormatError("prompt", f"the record is {type(record).__name__}, expected an object")
    if fmt in ("auto", "") and "prompt" in record and not any(
            k in record for k in ("chosen", "completion")):
        return _prompt(record["prompt"], "prompt")  # text, or messages ending with the user
    _, example = parse(record, fmt or "auto", fields)
    if "prompt" in example:
        return _to_user_turn(example["prompt"])
    if "messages" in example:
        return _to_user_turn(example["messages"])
    raise FormatError("prompt", "a text record has no prompt (use prompts or conversations)")


def _to_user_turn(messages: list) -> list:
    """The conversation up to (and with) its last user or tool turn."""
    from .data.formats import FormatError
    last = max((i for i, m in enumerate(messages) if m["role"] in ("user", "tool")), default=-1)
    if last < 0:
        raise FormatError("prompt", "the conversation has no user turn")
    return [dict(m) for m in messages[:last + 1]]


def round_prompts(prompts: list[Prompt], round_index: int, per_round: int, seed: int
                  ) -> list[Prompt]:
    """Every prompt each round (per_round 0), or round r's next ``per_round`` prompts of one
    fixed shuffle (cycling), as Online-RLHF gives each iteration its own prompts."""
    if not per_round or per_round >= len(prompts):
        return list(prompts)
    order = np.random.RandomState(seed).permutation(len(prompts))
    start = round_index * per_round
    return [prompts[order[(start + k) % len(prompts)]] for k in range(per_round)]


def derived_seed(*parts: int) -> int:
    """A 31-bit seed from integers (seed, phase, round, chunk): independent of batching."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


# --------------------------------------------------------------------------- files


def _write_atomic(path: str, lines) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in lines:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def complete_chunks(path: str, chunk_sizes: list[int]) -> list[dict]:
    """The lines of whole chunks at the start of ``path`` (a line torn by a kill and the
    lines of a chunk not fully written are cut off the file)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    kept, start = [], 0
    for chunk, size in enumerate(chunk_sizes):
        part = rows[start:start + size]
        if len(part) < size or any(r.get("chunk") != chunk for r in part):
            break
        kept.extend(part)
        start += size
    if len(kept) != len(rows) or rows and not open(path, "rb").read().endswith(b"\n"):
        _write_atomic(path, kept)
    return kept


# --------------------------------------------------------------------------- phases


class Phase:
    """Seconds and tokens of one phase (tokens/s in the round's metrics)."""

    def __init__(self):
        self.t0, self.tokens = time.perf_counter(), 0

    def done(self) -> dict:
        s = time.perf_counter() - self.t0
        return {"seconds": s, "tokens": self.tokens, "tokens_per_s": self.tokens / max(s, 1e-9)}


def _load(path: str, mesh, config, **extra):
    from . import models
    m = config.model
    return models.load(path, mesh=mesh, param_dtype=m.dtype, dtype=m.dtype,
                       scan_layers=m.scan_layers, attention=m.attention, remat_policy="none",
                       moe_impl=m.get("moe_impl", "grouped"), **extra)


def sample(config, mesh, policy_path: str, prompts: list[Prompt], path: str, *,
           n: int, seed_parts: tuple, data_tools, on_chunk=None) -> tuple[list[dict], dict]:
    """``n`` responses to each prompt from the policy at ``policy_path`` (appended to
    ``path`` per chunk of prompts; whole chunks already there are kept, not redrawn)."""
    from .data.hf_export import end_of_turn
    from .generate import generate
    o = config.online
    tokenizer, template = data_tools(policy_path)
    encoded = [template.encode_prompt(p.messages) for p in prompts]
    sizes = [len(prompts[i:i + o.sample_batch]) for i in range(0, len(prompts), o.sample_batch)]
    rows = complete_chunks(path, sizes)
    phase = Phase()
    if len(rows) < len(prompts):
        stop = tuple(i for i in (tokenizer.eos_id, end_of_turn(template)) if i is not None)
        model = _load(policy_path, mesh, config)
        with jax.set_mesh(mesh):
            for chunk in range(len(rows) // o.sample_batch if rows else 0, len(sizes)):
                lo = chunk * o.sample_batch
                part = prompts[lo:lo + sizes[chunk]]
                gens = generate(model.config, model.params, encoded[lo:lo + sizes[chunk]],
                                max_new_tokens=o.max_new_tokens, temperature=o.temperature,
                                top_k=o.top_k, top_p=o.top_p, n=n, stop_ids=stop,
                                seed=derived_seed(config.seed, *seed_parts, chunk))
                new = []
                for k, p in enumerate(part):
                    responses = []
                    for g in gens[k * n:(k + 1) * n]:
                        phase.tokens += len(g.ids)
                        text = tokenizer.decode([i for i in g.ids if i not in stop])
                        responses.append({"text": text, "finish_reason": g.finish_reason,
                                          "tokens": len(g.ids), "logprob": float(sum(g.logprobs))})
                    new.append({"chunk": chunk, "prompt_index": p.index, "where": p.where,
                                "prompt": p.messages, "responses": responses})
                if jax.process_index() == 0:
                    with open(path, "a", encoding="utf-8") as f:
                        f.write("".join(json.dumps(r) + "\n" for r in new))
                        f.flush()
                        os.fsync(f.fileno())
                rows.extend(new)
                if on_chunk is not None:
                    on_chunk(chunk)
        del model
        gc.collect()
    return rows, phase.done()


def _score_fn(config):
    from .models import forward_hidden
    from .objectives.reward import last_token_index

    @jax.jit
    def score(params, ids, lengths):
        t = ids.shape[1]
        segment_ids = (jnp.arange(t)[None, :] < lengths[:, None]).astype(jnp.int32)
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), ids.shape)
        hidden = forward_hidden(config, params, ids, segment_ids=segment_ids,
                                positions=positions)
        last = last_token_index(segment_ids)
        h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        return jnp.einsum("rd,d->r", h.astype(jnp.float32),
                          params["reward_head"]["kernel"].astype(jnp.float32))
    return score


class RewardModel:
    """A reward model resident on the mesh: ``score(prompt messages, response texts)``."""

    def __init__(self, config, mesh):
        from .data.model_tools import model_data_tools
        from .generate import bucket
        from .parallel.sharding import batch_divisor
        o = config.online
        self.model = _load(o.reward_model, mesh, config)
        if self.model.head != "reward":
            raise ValueError(f"online.reward_model={o.reward_model!r} is a {self.model.head} "
                             "model, not a reward model (configs/reward.py trains one; an HF "
                             "directory must be a *ForSequenceClassification with num_labels=1)")
        problems = []
        tok, tpl = model_data_tools(
            self.model, o.reward_model, template=None if o.reward_template == "auto"
            else o.reward_template, warn=problems.append)
        if tpl is None:
            raise ValueError(f"online.reward_model={o.reward_model!r}: "
                             + ("; ".join(problems) or "it records no chat template")
                             + " (set online.reward_template)")
        self.tokenizer, self.template, self.mesh = tok, tpl, mesh
        self.max_length = o.reward_max_length or config.seq_len
        self.batch = -(-o.reward_batch // batch_divisor()) * batch_divisor()
        self.bucket = bucket
        self.fn = _score_fn(self.model.config)

    def encode(self, messages, text: str) -> list[int] | None:
        """Prompt + response ids in the reward model's template (the end kept), or None for
        a response the template refuses (empty)."""
        try:
            ids = self.template.encode_prompt(messages) + self.template.encode_response(
                text, messages)
        except ValueError:
            return None
        return ids[-self.max_length:]

    def score(self, rows: list[list[int]]) -> np.ndarray:
        """Rewards of token rows, in order (rows sorted by length into batches)."""
        out = np.zeros(len(rows), np.float32)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        with jax.set_mesh(self.mesh):
            for lo in range(0, len(order), self.batch):
                idx = order[lo:lo + self.batch]
                t = min(self.bucket(max(len(rows[i]) for i in idx)), self.max_length)
                ids = np.zeros((self.batch, t), np.int32)
                lengths = np.zeros((self.batch,), np.int32)
                for k, i in enumerate(idx):
                    ids[k, :len(rows[i])] = rows[i]
                    lengths[k] = len(rows[i])
                r = jax.device_get(self.fn(self.model.params, jnp.asarray(ids),
                                           jnp.asarray(lengths)))
                out[idx] = r[:len(idx)]
        return out

    def close(self):
        self.model = None
        gc.collect()


def score(rm: RewardModel, rows: list[dict], penalty: float) -> tuple[list[dict], dict]:
    """Each response's ``reward`` (``reward_raw`` minus the penalty when it never reached a
    stop token; None for one the reward model's template refuses)."""
    phase = Phase()
    flat, where = [], []
    for r, row in enumerate(rows):
        for k, resp in enumerate(row["responses"]):
            ids = rm.encode(row["prompt"], resp["text"])
            if ids is not None:
                flat.append(ids)
                where.append((r, k))
    rewards = rm.score(flat) if flat else np.zeros(0, np.float32)
    phase.tokens = sum(len(x) for x in flat)
    out = [dict(row, responses=[dict(resp, reward=None, reward_raw=None)
                                for resp in row["responses"]]) for row in rows]
    for (r, k), value in zip(where, rewards.tolist()):
        resp = out[r]["responses"][k]
        resp["reward_raw"] = value
        resp["reward"] = value - (penalty if resp["finish_reason"] != "stop" else 0.0)
    return out, phase.done()


def make_pair(rewards: list, rule: str, rng: np.random.RandomState) -> tuple[int, int] | None:
    """(chosen, rejected) indices among one prompt's responses, or None: the best response
    against the worst (``best_vs_worst``) or against a uniformly drawn other one
    (``best_vs_random``); responses without a reward are left out, and a pair whose two
    rewards are equal (a tie) is dropped. The first of equal bests / worsts is taken."""
    valid = [i for i, r in enumerate(rewards) if r is not None]
    if len(valid) < 2:
        return None
    best = max(valid, key=lambda i: rewards[i])
    if rule == "best_vs_worst":
        other = min(valid, key=lambda i: rewards[i])
    elif rule == "best_vs_random":
        others = [i for i in valid if i != best]
        other = others[rng.randint(len(others))]
    else:
        raise ValueError(f"online.pair_rule={rule!r}: one of {PAIR_RULES}")
    if rewards[best] == rewards[other]:
        return None
    return best, other


def pair(scored: list[dict], rule: str, seed: int, kto: bool) -> tuple[list[dict], dict]:
    """Training records from scored samples: preference pairs, or KTO rows (chosen
    desirable, rejected undesirable), and what was dropped."""
    records, ties, gaps = [], 0, []
    for row in scored:
        rewards = [r["reward"] for r in row["responses"]]
        texts = [r["text"] for r in row["responses"]]
        rng = np.random.RandomState(derived_seed(seed, row["prompt_index"]))
        # identical texts cannot make a pair: the best other text's reward decides
        found = make_pair(rewards, rule, rng)
        if found is None or texts[found[0]].strip() == texts[found[1]].strip():
            ties += 1
            continue
        c, r = found
        gaps.append(rewards[c] - rewards[r])
        meta = {"prompt_index": row["prompt_index"], "where": row["where"],
                "reward_chosen": rewards[c], "reward_rejected": rewards[r]}
        if kto:
            records.append({"prompt": row["prompt"], "completion": texts[c], "label": True,
                            **meta})
            records.append({"prompt": row["prompt"], "completion": texts[r], "label": False,
                            **meta})
        else:
            records.append({"prompt": row["prompt"], "chosen": texts[c], "rejected": texts[r],
                            **meta})
    return records, {"pairs": len(gaps), "dropped": ties,
                     "reward_gap": float(np.mean(gaps)) if gaps else 0.0}


def sample_stats(scored: list[dict]) -> dict:
    """Mean and max reward, the mean of each prompt's best, end-of-turn rate, mean length."""
    rewards = [r["reward"] for row in scored for r in row["responses"] if r["reward"] is not None]
    best = [max(v) for v in ([r["reward"] for r in row["responses"] if r["reward"] is not None]
                             for row in scored) if v]
    responses = [r for row in scored for r in row["responses"]]
    return {"reward_mean": float(np.mean(rewards)) if rewards else float("nan"),
            "reward_max": float(np.max(rewards)) if rewards else float("nan"),
            "reward_best_mean": float(np.mean(best)) if best else float("nan"),
            "eot_rate": float(np.mean([r["finish_reason"] == "stop" for r in responses])),
            "length_mean": float(np.mean([r["tokens"] for r in responses])),
            "responses": len(responses)}


# --------------------------------------------------------------------------- the loop


def round_config(config, *, policy: str, data: str, kto: bool, reference: str):
    """The ``medjax.train`` config of one round's training."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        del c["online"]
        c.model.init_from = policy
        c.data.sources = data
        c.data.format = "kto" if kto else "preference"
        c.data.fields = ""
        c.data.eval_sources = ""
        c.data.eval_split = 0.0
        c.eval.at_start = False
        c.objective.reference = reference
        steps = config.online.steps_per_round
        c.steps, c.epochs = (steps, 0) if steps else (0, 1)
    return c


def round_reference(configured: str, rule: str, round_index: int, initial: str) -> str:
    """``objective.reference`` of round r's training: its starting policy's (``frozen`` or
    ``precompute``, as configured) in round 0 and with ``refresh``; else the initial
    policy's, precomputed from it (``precompute:DIR``) or resident (``DIR``)."""
    if rule == "refresh" or round_index == 0 or configured not in ("frozen", "precompute"):
        return configured
    return f"precompute:{initial}" if configured == "precompute" else initial


def fitting_prompts(prompts: list[Prompt], template, limit: int, key: str) -> list[Prompt]:
    """The prompts the policy's template encodes in at most ``limit`` tokens (the others are
    left out with a warning); one the template refuses is an error naming its file:line."""
    from .data.sources import DataError
    kept = []
    for p in prompts:
        try:
            n = len(template.encode_prompt(p.messages))
        except ValueError as e:
            raise DataError(f"{p.where}: {e}") from None
        if n <= limit:
            kept.append(p)
    if len(kept) < len(prompts):
        log.warning("online.%s: %d of %d prompts are longer than data.max_prompt_length=%d "
                    "tokens and are left out", key, len(prompts) - len(kept), len(prompts),
                    limit)
    if not kept:
        raise ValueError(f"online.{key}: every prompt is longer than data.max_prompt_length="
                         f"{limit}")
    return kept


def run(config, workdir: str):
    """Runs (or resumes) every round; returns the last round's training results."""
    from .configs import check as check_config
    from .training import run as train
    from .training.metrics import MetricsWriter
    from .training.state import build_mesh, data_tools as config_data_tools

    check_config(config)
    check(config)
    o = config.online
    os.makedirs(os.path.join(workdir, "heldout"), exist_ok=True)
    with open(os.path.join(workdir, "online_config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    initial = os.path.abspath(config.model.init_from)
    from . import objectives
    kto = objectives.get(config.objective.name).kind == "kto"  # unpaired rows, not pairs
    prompts = read_prompts(o.prompts, config.data.format, config.data.fields)
    held_out = read_prompts(o.eval_prompts) if str(o.eval_prompts).strip() else []
    mesh = build_mesh(config)

    def data_tools(policy):
        c = round_config(config, policy=policy, data="", kto=kto, reference="frozen")
        _, tokenizer, template = config_data_tools(c)
        if template is None:
            raise ValueError(f"{policy}: no chat template to sample with (set data.template)")
        return tokenizer, template

    _, template0 = data_tools(initial)
    prompts = fitting_prompts(prompts, template0, config.data.max_prompt_length, "prompts")
    held_out = fitting_prompts(held_out, template0, config.data.max_prompt_length,
                               "eval_prompts") if held_out else []

    rounds_path = os.path.join(workdir, "rounds.jsonl")
    done = [json.load(open(os.path.join(workdir, f"round_{r}", "round.json")))
            for r in range(o.rounds)
            if os.path.exists(os.path.join(workdir, f"round_{r}", "round.json"))]
    done = done[:next((i for i, d in enumerate(done) if d["round"] != i), len(done))]
    writer = MetricsWriter(workdir, resume_step=len(done), tensorboard=config.logging.tensorboard)
    results = None
    try:
        def evaluate_policy(k: int, policy: str) -> dict | None:
            if not held_out:
                return None
            path = os.path.join(workdir, "heldout", f"policy_{k}.jsonl")
            final = os.path.join(workdir, "heldout", f"policy_{k}.json")
            if os.path.exists(final):
                return json.load(open(final))
            rows, sampled = sample(config, mesh, policy, held_out, path + ".part",
                                   n=o.eval_samples_per_prompt, seed_parts=(1, 0),
                                   data_tools=data_tools)
            rm = RewardModel(config, mesh)
            scored, _ = score(rm, rows, o.missing_eot_penalty)
            rm.close()
            _write_atomic(path, scored)
            os.remove(path + ".part")
            stats = {"policy": k, **sample_stats(scored),
                     "sample_tokens_per_s": sampled["tokens_per_s"]}
            with open(final + ".tmp", "w") as f:
                json.dump(stats, f)
            os.replace(final + ".tmp", final)
            return stats

        first = evaluate_policy(0, initial)
        if first is not None and not done:
            writer.write(0, {"heldout/reward_mean": first["reward_mean"],
                             "heldout/eot_rate": first["eot_rate"],
                             "heldout/length_mean": first["length_mean"]})
            _say(f"held-out prompts, initial policy: mean reward {first['reward_mean']:.4f} "
                 f"({len(held_out)} prompts x {o.eval_samples_per_prompt})")
        for r in range(len(done), o.rounds):
            rdir = os.path.join(workdir, f"round_{r}")
            os.makedirs(rdir, exist_ok=True)
            policy = initial if r == 0 else os.path.join(workdir, f"round_{r - 1}", "train")
            these = round_prompts(prompts, r, o.prompts_per_round, config.seed)
            _say(f"round {r}: sampling {o.samples_per_prompt} responses to each of "
                 f"{len(these)} prompts from {policy}")
            rows, sampled = sample(config, mesh, policy, these,
                                   os.path.join(rdir, "samples.jsonl"),
                                   n=o.samples_per_prompt, seed_parts=(0, r),
                                   data_tools=data_tools, on_chunk=_chunk_done)
            scored_path = os.path.join(rdir, "scored.jsonl")
            if os.path.exists(scored_path):
                scored, scoring = _read_jsonl(scored_path), json.load(
                    open(os.path.join(rdir, "scoring.json")))
            else:
                rm = RewardModel(config, mesh)
                scored, scoring = score(rm, rows, o.missing_eot_penalty)
                rm.close()
                _write_atomic(scored_path, scored)
                with open(os.path.join(rdir, "scoring.json"), "w") as f:
                    json.dump(scoring, f)
            records, paired = pair(scored, o.pair_rule, derived_seed(config.seed, 2, r), kto)
            data = os.path.join(rdir, "kto.jsonl" if kto else "pairs.jsonl")
            if not os.path.exists(data):
                _write_atomic(data, records)
            stats = sample_stats(scored)
            _say(f"round {r}: samples' mean reward {stats['reward_mean']:.4f}, "
                 f"end-of-turn rate {stats['eot_rate']:.2f}; {paired['pairs']} pairs "
                 f"({paired['dropped']} prompts dropped: ties), mean gap "
                 f"{paired['reward_gap']:.4f}")
            if paired["pairs"] == 0:
                raise ValueError(f"round {r}: no pairs (every prompt's samples tied); see "
                                 f"{scored_path}")
            reference = round_reference(config.objective.reference, o.reference, r, initial)
            t0 = time.perf_counter()
            results = train(round_config(config, policy=policy, data=data, kto=kto,
                                         reference=reference), os.path.join(rdir, "train"))
            train_s = time.perf_counter() - t0
            after = evaluate_policy(r + 1, os.path.join(rdir, "train"))
            trained = {k: float(np.asarray(v)) for k, v in (results or {}).items()
                       if np.ndim(v) == 0}
            summary = {"round": r, "prompts": len(these), **stats, **paired,
                       "sample": sampled, "score": scoring,
                       "train": {"seconds": train_s, **trained},
                       "heldout_before": (evaluate_policy(r, policy) or {}).get("reward_mean"),
                       "heldout_after": (after or {}).get("reward_mean")}
            with open(os.path.join(rdir, "round.json.tmp"), "w") as f:
                json.dump(summary, f)
            os.replace(os.path.join(rdir, "round.json.tmp"), os.path.join(rdir, "round.json"))
            done.append(summary)
            _write_atomic(rounds_path, done)
            metrics = {f"samples/{k}": v for k, v in stats.items()}
            metrics.update({"pairs/count": paired["pairs"], "pairs/dropped": paired["dropped"],
                            "pairs/reward_gap": paired["reward_gap"],
                            "time/sample_s": sampled["seconds"], "time/score_s": scoring["seconds"],
                            "time/train_s": train_s})
            metrics.update({f"train/{k}": v for k, v in trained.items()})
            if after is not None:
                metrics.update({"heldout/reward_mean": after["reward_mean"],
                                "heldout/eot_rate": after["eot_rate"],
                                "heldout/length_mean": after["length_mean"]})
            writer.write(r + 1, metrics)
            _say(f"round {r} done: held-out mean reward "
                 + (f"{summary['heldout_before']:.4f} -> {summary['heldout_after']:.4f}"
                    if after is not None else "(no online.eval_prompts)"))
    finally:
        writer.close()
    _say(table(done))
    return results


def _chunk_done(chunk: int) -> None:
    """Called after each sampled chunk is on disk (tests kill the process here)."""


def _say(line: str) -> None:
    if jax.process_index() == 0:
        print(line, flush=True)


def table(rounds: list[dict]) -> str:
    """The per-round figures as a text table."""
    lines = ["round  samples' reward (mean / best)  gap     EOT   length  pairs  held-out before"
             " -> after"]
    for d in rounds:
        before, after = d.get("heldout_before"), d.get("heldout_after")
        lines.append(f"{d['round']:>5}  {d['reward_mean']:>12.4f} / {d['reward_best_mean']:<8.4f}"
                     f"  {d['reward_gap']:<6.3f}  {d['eot_rate']:.2f}  {d['length_mean']:>6.1f}"
                     f"  {d['pairs']:>5}  "
                     + (f"{before:.4f} -> {after:.4f}" if after is not None else "-"))
    return "\n".join(lines)
