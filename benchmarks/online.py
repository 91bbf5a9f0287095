"""Where an online preference round's time goes: sampling, scoring, training.

    python benchmarks/online.py --workdir=/tmp/online          # a finished online run
    python benchmarks/online.py --shape=medium                  # builds and runs one

With ``--workdir``: reads each round's ``round.json`` (written by medjax/online.py) and
prints, per round, the seconds and share of the round spent in each phase and each
phase's tokens/s: sampling = new tokens generated / s, scoring = prompt + response
tokens scored / s, training = the training run's own ``tokens_per_second`` (padded
rows, its last logged value) and its wall time including compilation and the
reference pre-pass. The held-out evaluation (sampling + scoring the held-out prompts)
is not part of a round's phases.

With ``--shape=medium``: a random policy and reward model of the medium shape (hidden
512, 8 layers, 8 query / 4 KV heads, MLP 1536, vocabulary 32,000: the Mistral
tokenizer and template) saved as medjax checkpoints, then ``--rounds`` rounds of
configs/online_dpo.py on the bundled prompts (``--prompts`` a round, 8 samples each,
``--new_tokens`` new tokens, 4 training steps of 8 pairs), then the table above.
Random weights rarely emit a stop token, so nearly every response runs to
``--new_tokens``: a fixed amount of generation per round.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "", "A finished (or partly finished) online run.")
flags.DEFINE_enum("shape", "", ["", "medium"], "Build random models of this shape and run.")
flags.DEFINE_integer("rounds", 2, "Rounds (with --shape).")
flags.DEFINE_integer("prompts", 32, "Prompts a round (with --shape).")
flags.DEFINE_integer("new_tokens", 64, "New tokens per response (with --shape).")

MEDIUM = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8,
              num_heads=8, num_kv_heads=4, head_dim=64)


def table(workdir: str) -> str:
    rows = []
    r = 0
    while os.path.exists(os.path.join(workdir, f"round_{r}", "round.json")):
        with open(os.path.join(workdir, f"round_{r}", "round.json")) as f:
            rows.append(json.load(f))
        r += 1
    if not rows:
        raise SystemExit(f"{workdir}: no finished round (round_*/round.json)")
    out = ["| round | sampling s (share) | tokens/s | scoring s (share) | tokens/s | "
           "training s (share) | tokens/s | samples' mean reward |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in rows:
        s, c, t = d["sample"], d["score"], d["train"]
        total = s["seconds"] + c["seconds"] + t["seconds"]
        out.append(f"| {d['round']} | {s['seconds']:.1f} ({s['seconds'] / total:.0%}) | "
                   f"{s['tokens_per_s']:.0f} | {c['seconds']:.1f} ({c['seconds'] / total:.0%}) | "
                   f"{c['tokens_per_s']:.0f} | {t['seconds']:.1f} ({t['seconds'] / total:.0%}) | "
                   f"{t.get('tokens_per_second', float('nan')):.0f} | {d['reward_mean']:.4f} |")
    return "\n".join(out)


def build_medium(root: str) -> tuple[str, str]:
    """A random medium policy and reward model, as medjax checkpoints (Mistral tokenizer)."""
    import jax

    from medjax.models import get_preset, init_params
    from medjax.models.checkpoint import save_model
    from medjax.objectives.reward import init_reward_head
    config = get_preset("mistral_tiny").replace(sliding_window=None, **MEDIUM)
    policy = init_params(config, jax.random.key(0))
    save_model(config, policy, os.path.join(root, "policy"), tokenizer="mistral",
               template="mistral")
    reward = {k: v for k, v in init_params(config, jax.random.key(1)).items() if k != "lm_head"}
    reward["reward_head"] = init_reward_head(config, jax.random.key(2))
    save_model(config, reward, os.path.join(root, "rm"), tokenizer="mistral",
               template="mistral")
    return os.path.join(root, "policy"), os.path.join(root, "rm")


def main(argv):
    del argv
    if FLAGS.workdir and not FLAGS.shape:
        print(table(FLAGS.workdir))
        return
    if not FLAGS.shape:
        raise SystemExit("give --workdir=DIR (a finished online run) or --shape=medium")
    import jax
    root = tempfile.mkdtemp(prefix="medjax_online_bench_")
    policy, rm = build_medium(root)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "configs"))
    import online_dpo

    from medjax.online import run
    c = online_dpo.get_config()
    c.model.init_from = policy
    c.model.vocab_size = 0
    c.online.reward_model = rm
    c.online.rounds = FLAGS.rounds
    c.online.prompts_per_round = FLAGS.prompts
    c.online.max_new_tokens = FLAGS.new_tokens
    c.online.eval_prompts = ""
    c.online.steps_per_round = 4
    c.seq_len = 64 + FLAGS.new_tokens + 8
    c.logging.progress = False
    workdir = FLAGS.workdir or os.path.join(root, "run")
    print(f"medium shape {MEDIUM}; {FLAGS.prompts} prompts x 8 samples x {FLAGS.new_tokens} "
          f"new tokens a round; JAX {jax.__version__} on {jax.devices()[0].platform}, "
          f"{os.cpu_count()} CPUs; workdir {workdir}", flush=True)
    run(c, workdir)
    print(table(workdir))


if __name__ == "__main__":
    app.run(main)
