"""medjax vs Tunix 0.1.7: DPO and SFT training throughput on the same model and data, CPU, f32.

    .venv/bin/python benchmarks/peer_tunix.py                       # DPO (frozen) and SFT
    .venv/bin/python benchmarks/peer_tunix.py --jobs=sft --steps=2
    .venv/bin/python benchmarks/peer_tunix.py --repeats=2           # medjax, Tunix, medjax, Tunix

The set-up is ``peer_trl.py``'s "equal" setting, and its functions do the shared work: the
random medium-shape Llama saved by transformers as an HF directory (safetensors, Mistral's
tokenizer and template), the DPO records (a prompt of seq_len / 4 tokens and two responses
filling the rest of ``--seq_len``, EOS included) and SFT conversations (that prompt and the
chosen response: exactly ``--seq_len`` tokens each), the medjax worker (``configs/dpo.py``
and ``configs/sft.py`` on that directory and data, f32, one CPU device, medjax as committed
at HEAD), the CPU-load measurement and the table.

Tunix runs in its own virtualenv (``--tunix_venv``, default ``benchmarks/.venv-tunix``, made
on first use): a plain venv of the same base interpreter with ``pip install
google-tunix==0.1.7`` under a constraints file that pins ``torch==2.13.0`` (nothing in
Tunix's dependencies asks for torch; the pin keeps pip from ever resolving another) and
jax, jaxlib and flax to ``.venv``'s versions, so that both frameworks run the same XLA
(if pip cannot satisfy those pins, it installs again with the torch pin alone).

What Tunix gets:
  model    ``tunix.models.llama3.params.create_model_from_safe_tensors`` on the same HF
           directory (f32; ``ModelConfig`` from its config.json, ``tunix_config``); the worker
           checks that the loaded parameters have the directory's count and sum.
  ids      the ids medjax's ``mistral`` template gives each record (which ``peer_trl``
           checks equal to the HF tokenizer's), written by this process to ``ids.npz``
           (``dpo_arrays``, ``sft_arrays``): Tunix is fed token ids, no tokenizer.
  DPO      ``tunix.sft.dpo.DPOTrainer`` (algorithm dpo, beta 0.1, label smoothing 0 = the
           sigmoid loss) with ``ref_model`` = a second model loaded from the directory (a
           frozen copy of the starting model); batches of ``TrainingInput`` (prompt ids
           left-padded, responses right-padded: here nothing is padded). Tunix runs the
           reference's log-probs in ``_prepare_inputs`` and the policy's forward and backward
           in its jitted train step; both are inside the timed step.
  SFT      ``tunix.sft.peft_trainer.PeftTrainer`` (no LoRA: full fine-tuning), its default
           loss, ``gen_model_input_fn`` as ``tunix/cli/peft_main.py`` writes it (positions
           and a causal mask from the non-pad tokens); one conversation per row of
           ``--seq_len`` (every position real; ``input_mask`` = medjax's loss mask, the
           assistant's tokens). PeftTrainer 0.1.7 does not pack sequences.
  optimizer optax: global-norm clipping then AdamW with medjax's config values (lr, b1, b2,
           eps, weight decay, clip norm) at a constant learning rate.

A Tunix step is timed from the trainer's ``_prepare_inputs`` (the batch already read) to
the train step's outputs being ready (``jax.block_until_ready``): reference log-probs (DPO),
forward, backward, clipping, AdamW. Blocking each step turns off Tunix's overlap of up to
two steps in flight (``max_inflight_computations``), as medjax's worker also waits for each
step. medjax's step covers ``device_batch`` (with the frozen reference's forward) and the
jitted step. The first ``--warmup`` steps (compilation) are not timed.

The table (``peer_trl.report``): step s (median), tokens/s over the positions fed, real
tokens/s, medjax / Tunix ratios; each run's load average at its start and end and the CPU
share other processes took while it ran (``cpu_load.OtherLoad``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peer_trl  # noqa: E402
from peer_trl import read_jsonl  # noqa: E402

TUNIX_VERSION = "0.1.7"
SAME_AS_OURS = ("jax", "jaxlib", "flax")  # pinned to .venv's versions in Tunix's venv

# job name -> the runs of one comparison, (framework, mode, options), in order
JOBS = {
    "dpo_frozen": [("medjax", "frozen", dict(reference="frozen")),
                   ("tunix", "frozen copy", {})],
    "sft": [("medjax", "packed", {}), ("tunix", "one conversation a row", {})],
}


# ----------------------------------------------------------------- Tunix's venv
def _tunix_ok(py: str) -> bool:
    check = ("import importlib.metadata as m, sys; "
             f"sys.exit(m.version('google-tunix') != {TUNIX_VERSION!r})")
    return subprocess.run([py, "-c", check], capture_output=True).returncode == 0


def constraints(versions: dict) -> str:
    """The constraints file's text: torch pinned (never resolved), and ``versions``."""
    lines = [f"torch=={peer_trl.TORCH_VERSION}"]
    lines += [f"{name}=={v}" for name, v in sorted(versions.items())]
    return "\n".join(lines) + "\n"


def tunix_python(venv: str) -> str:
    """Tunix's venv's interpreter, made (once) as the module docstring says."""
    import importlib.metadata
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and _tunix_ok(py):
        return py
    base = getattr(sys, "_base_executable", sys.executable)
    print(f"making {venv} (google-tunix {TUNIX_VERSION})", flush=True)
    subprocess.run([base, "-m", "venv", venv], check=True)
    ours = {name: importlib.metadata.version(name) for name in SAME_AS_OURS}
    path = os.path.join(venv, "constraints.txt")
    for pins in (ours, {}):  # .venv's jax and flax if pip can; torch pinned either way
        with open(path, "w") as f:
            f.write(constraints(pins))
        rc = subprocess.run([py, "-m", "pip", "install", "--no-input",
                             "--disable-pip-version-check", f"google-tunix=={TUNIX_VERSION}",
                             "-c", path]).returncode
        if rc == 0:
            break
        print(f"pip could not install google-tunix with {pins}; trying without", flush=True)
    check = ("import importlib.metadata as m, importlib.util as u, jax, flax; "
             "from tunix.sft.dpo import dpo_trainer; from tunix.models.llama3 import params; "
             "assert u.find_spec('torch') is None, 'torch was installed'; "
             "print('Tunix venv: google-tunix', m.version('google-tunix'), 'jax', "
             "jax.__version__, 'flax', flax.__version__, jax.devices())")
    subprocess.run([py, "-c", check], check=True)
    return py


# ----------------------------------------------------------------- ids and config
def dpo_arrays(records, template, prompt_len: int, response_len: int, pad_id: int) -> dict:
    """Tunix's DPO ``TrainingInput`` fields for ``records`` ({prompt, chosen, rejected}), as
    medjax's template encodes them: prompts left-padded to ``prompt_len``, responses
    right-padded to ``response_len``; masks 1 on real tokens. Longer sequences are an
    error (nothing is cut)."""
    import numpy as np
    n = len(records)
    out = {"prompt_ids": np.full((n, prompt_len), pad_id, np.int32),
           "chosen_ids": np.full((n, response_len), pad_id, np.int32),
           "rejected_ids": np.full((n, response_len), pad_id, np.int32)}
    for k in list(out):
        out[k.replace("_ids", "_mask")] = np.zeros_like(out[k])
    for i, r in enumerate(records):
        seqs = {"prompt": template.encode_prompt([{"role": "user", "content": r["prompt"]}]),
                "chosen": template.encode_response(r["chosen"]),
                "rejected": template.encode_response(r["rejected"])}
        for key, ids in seqs.items():
            width = prompt_len if key == "prompt" else response_len
            if len(ids) > width:
                raise ValueError(f"record {i}: {key} has {len(ids)} tokens, more than {width}")
            cols = slice(width - len(ids), width) if key == "prompt" else slice(0, len(ids))
            out[f"{key}_ids"][i, cols] = ids
            out[f"{key}_mask"][i, cols] = 1
    return out


def sft_arrays(records, template, seq_len: int, pad_id: int) -> dict:
    """Tunix's SFT ``TrainingInput`` for ``records`` ({messages}): one conversation a row of
    ``seq_len`` (right-padded with ``pad_id``), ``input_mask`` = medjax's loss mask."""
    import numpy as np
    tokens = np.full((len(records), seq_len), pad_id, np.int32)
    mask = np.zeros_like(tokens)
    for i, r in enumerate(records):
        enc = template.encode_conversation(r["messages"])
        if len(enc.ids) > seq_len:
            raise ValueError(f"record {i}: {len(enc.ids)} tokens, more than {seq_len}")
        if pad_id in enc.ids:
            raise ValueError(f"record {i}: the pad id {pad_id} is a token of it")
        tokens[i, :len(enc.ids)] = enc.ids
        mask[i, :len(enc.ids)] = enc.loss_mask
    return {"input_tokens": tokens, "input_mask": mask}


def batches(arrays: dict, batch: int, count: int) -> list[dict]:
    """``count`` batches of ``batch`` rows of every array, cycling over the rows."""
    import numpy as np
    n = len(next(iter(arrays.values())))
    out = []
    for b in range(count):
        rows = np.arange(b * batch, (b + 1) * batch) % n
        out.append({k: v[rows] for k, v in arrays.items()})
    return out


def tunix_config(hf: dict) -> dict:
    """``tunix.models.llama3.model.ModelConfig``'s arguments for an HF Llama config.json."""
    if hf.get("model_type") != "llama":
        raise ValueError(f"model_type {hf.get('model_type')!r}: Tunix's llama3 model only")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"rope {rope}: the script passes only rope_theta")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError("biases: Tunix's llama3 model has none")
    heads = hf["num_attention_heads"]
    return dict(num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"],
                embed_dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"],
                num_heads=heads, head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
                num_kv_heads=hf["num_key_value_heads"],
                rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
                norm_eps=hf["rms_norm_eps"],
                weight_tying=bool(hf.get("tie_word_embeddings", False)))


def medjax_optimizer(src: str, objective: str) -> dict:
    """The optimizer values of medjax's config for ``objective`` (``configs/<dpo|sft>.py``
    of the snapshot ``src``), for Tunix's optax optimizer."""
    import importlib.util
    path = os.path.join(src, "configs", f"{objective}.py")
    spec = importlib.util.spec_from_file_location(f"peer_tunix_{objective}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    o = module.get_config().optimizer
    return {k: float(o[k]) for k in ("lr", "b1", "b2", "eps", "weight_decay", "clip_norm")}


def prepare(args, root: str, src: str) -> dict:
    """``peer_trl.prepare``'s model directory and equal-length data, plus the ids Tunix is
    fed (``ids.npz``) and each objective's medjax optimizer values."""
    import numpy as np

    from medjax.data.templates import get_template
    from medjax.data.tokenizer import get_tokenizer
    args.settings = ["equal"]
    made = peer_trl.prepare(args, root)
    d = made["data"]["equal"]
    with open(os.path.join(made["model_dir"], "config.json")) as f:
        pad_id = json.load(f).get("pad_token_id") or 0
    template = get_template("mistral", get_tokenizer("mistral"))
    prompt_len = args.seq_len // 4
    arrays = {f"dpo_{k}": v for k, v in dpo_arrays(read_jsonl(d["dpo"]), template, prompt_len,
                                                    args.seq_len - prompt_len, pad_id).items()}
    arrays.update({f"sft_{k}": v for k, v in
                   sft_arrays(read_jsonl(d["sft"]), template, args.seq_len, pad_id).items()})
    ids = os.path.join(root, "ids.npz")
    np.savez(ids, **arrays)
    return dict(made, ids=ids, pad_id=pad_id, check=d["check"],
                optimizer={o: medjax_optimizer(src, o) for o in ("dpo", "sft")})


# ----------------------------------------------------------------- the Tunix worker
def tunix_worker(job: dict) -> dict:
    import importlib.metadata

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from safetensors.numpy import load_file
    from tunix.models.llama3 import model as llama3
    from tunix.models.llama3 import params as llama3_params
    from tunix.sft import peft_trainer
    from tunix.sft import utils as sft_utils
    from tunix.sft.dpo import dpo_trainer

    from cpu_load import OtherLoad
    dpo = job["objective"] == "dpo"
    with open(os.path.join(job["model_dir"], "config.json")) as f:
        config = llama3.ModelConfig(**tunix_config(json.load(f)))

    # a mesh of the one device, as Tunix's CLI always makes one: without one the trainer
    # does not place the optimizer state before jitting and compiles its step twice
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)

    def load():
        return llama3_params.create_model_from_safe_tensors(job["model_dir"], config,
                                                            mesh=mesh, dtype=jnp.float32)

    t0 = time.perf_counter()
    model = load()
    ref = load() if dpo else None
    # the same weights as the directory: count and sum (layouts differ, sums do not)
    ours = jax.tree.leaves(nnx.state(model, nnx.Param))
    files = [load_file(os.path.join(job["model_dir"], n))
             for n in sorted(os.listdir(job["model_dir"])) if n.endswith(".safetensors")]
    theirs = [v for f in files for v in f.values()]
    weights = {"params": sum(x.size for x in ours), "file_params": sum(x.size for x in theirs),
               "sum": float(sum(np.asarray(x, np.float64).sum() for x in ours)),
               "file_sum": float(sum(np.asarray(x, np.float64).sum() for x in theirs))}
    if weights["params"] != weights["file_params"] or not np.isclose(
            weights["sum"], weights["file_sum"], rtol=1e-6, atol=1e-3):
        raise SystemExit(f"Tunix's model does not hold the directory's weights: {weights}")
    o = job["optimizer"]
    optimizer = optax.chain(optax.clip_by_global_norm(o["clip_norm"]),
                            optax.adamw(o["lr"], b1=o["b1"], b2=o["b2"], eps=o["eps"],
                                        weight_decay=o["weight_decay"]))
    n_steps = job["warmup"] + job["steps"]
    prefix = "dpo_" if dpo else "sft_"
    with np.load(job["ids"]) as z:
        arrays = {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}
    data = batches(arrays, job["batch"], n_steps)
    record = {"times": [], "positions": [], "real": [], "seqs": [], "loss": []}
    pad = job["pad_id"]

    def count(x):  # the batch the trainer got
        if dpo:
            masks = [x["prompt_mask"], x["chosen_mask"], x["prompt_mask"], x["rejected_mask"]]
            record["positions"].append(int(sum(m.size for m in masks)))
            record["real"].append(int(sum(m.sum() for m in masks)))
            record["seqs"].append(len(x["prompt_ids"]))
        else:
            record["positions"].append(int(x.input_tokens.size))
            record["real"].append(int((x.input_tokens != pad).sum()))
            record["seqs"].append(len(x.input_tokens))

    def timed(cls):
        class Timed(cls):
            def _prepare_inputs(self, x):  # DPO: the reference's log-probs are computed here
                record["t0"] = time.perf_counter()
                count(x)
                return super()._prepare_inputs(x)

            def jit_train_and_eval_step(self, *a, **k):
                train, evaluate = super().jit_train_and_eval_step(*a, **k)

                def step(example):
                    out = jax.block_until_ready(train(example))
                    record["times"].append(time.perf_counter() - record["t0"])
                    record["loss"].append(float(out[0]))
                    return out

                step.func = getattr(train, "func", None)  # train() reads its cache size
                return step, evaluate
        return Timed

    common = dict(eval_every_n_steps=10 ** 9, max_steps=n_steps, pbar_description=None)
    t1 = time.perf_counter()
    if dpo:
        trainer = timed(dpo_trainer.DPOTrainer)(
            model=model, ref_model=ref, optimizer=optimizer,
            training_config=dpo_trainer.DPOTrainingConfig(
                **common, algorithm="dpo", beta=0.1, label_smoothing=0.0))
    else:
        trainer = timed(peft_trainer.PeftTrainer)(
            model, optimizer, peft_trainer.TrainingConfig(**common))

        def gen_model_input_fn(x):  # tunix/cli/peft_main.py's
            pad_mask = x.input_tokens != pad
            return {"input_tokens": x.input_tokens, "input_mask": x.input_mask,
                    "positions": sft_utils.build_positions_from_mask(pad_mask),
                    "attention_mask": sft_utils.make_causal_attn_mask(pad_mask)}

        trainer = trainer.with_gen_model_input_fn(gen_model_input_fn)
        data = [peft_trainer.TrainingInput(**b) for b in data]
    init_s = time.perf_counter() - t1
    if trainer._lora_enabled:
        raise SystemExit("LoRA parameters found: this is to be full fine-tuning")
    with OtherLoad() as other, mesh:
        trainer.train(data)
    w = job["warmup"]
    if len(record["times"]) != n_steps:
        raise SystemExit(f"Tunix ran {len(record['times'])} steps, not {n_steps}")
    extra = {"init_s": init_s, "load_s": t1 - t0, "loss": record["loss"][-1],
             "first_loss": record["loss"][0], "weights": weights,
             "settings": {"trainer": type(trainer).__mro__[1].__name__,
                          "ref_model": "frozen copy (loaded again)" if dpo else "n/a",
                          "lora": False, "optimizer": o, "remat": config.remat_config.name,
                          "rope_theta (config)": config.rope_theta,
                          "max_inflight_computations": trainer.config.max_inflight_computations},
             "version": f"google-tunix {importlib.metadata.version('google-tunix')}, jax "
                        f"{jax.__version__}, flax {importlib.metadata.version('flax')}, "
                        f"{jax.devices()[0].device_kind} x {jax.device_count()}"}
    return peer_trl._summary(record["times"][w:], record["positions"][w:], record["real"][w:],
                             record["seqs"][w:], sum(record["times"][:w]), other.describe(),
                             extra)


# ----------------------------------------------------------------- orchestration
def plan_jobs(args, made: dict, src: str, commit: str) -> list:
    """[("equal", job name, [(framework, mode, job dict), ...])] in the order they run."""
    plan = []
    for name in args.jobs:
        dpo = name.startswith("dpo")
        objective = "dpo" if dpo else "sft"
        runs = []
        for fw, mode, opts in JOBS[name]:
            job = dict(framework=fw, mode=mode, objective=objective, setting="equal",
                       name=name, data=made["data"]["equal"][objective],
                       model_dir=made["model_dir"], seq_len=args.seq_len,
                       batch=args.dpo_batch if dpo else args.sft_batch, steps=args.steps,
                       warmup=args.warmup, src=src, commit=commit,
                       medjax_set=args.medjax_set, **opts)
            if fw == "tunix":
                job.update(ids=made["ids"], pad_id=made["pad_id"],
                           optimizer=made["optimizer"][objective])
            runs.append((fw, mode, job))
        plan.append(("equal", name, runs))
    return plan


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", default="dpo_frozen,sft", help="comma-separated: dpo_frozen, sft")
    peer_trl.common_args(p)
    p.add_argument("--seq_len", type=int, default=512, help="every sequence (DPO: prompt "
                   "seq_len / 4 + response; SFT: one conversation a row)")
    p.add_argument("--dpo_batch", type=int, default=8, help="pairs a step")
    p.add_argument("--sft_batch", type=int, default=8, help="rows a step")
    p.add_argument("--medjax_set", action="append", default=[],
                   help="extra medjax config key=value (repeatable)")
    p.add_argument("--tunix_venv", default=os.path.join(HERE, ".venv-tunix"))
    p.add_argument("--workdir", default="", help="keep the model, data and logs here")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.jobs = [j for j in args.jobs.split(",") if j]
    unknown = [j for j in args.jobs if j not in JOBS]
    if unknown:
        p.error(f"unknown --jobs {unknown}; known: {', '.join(JOBS)}")
    if args.seq_len % 4 or args.seq_len < 8:
        p.error("--seq_len: a multiple of 4, at least 8")
    # what peer_trl's prepare and report read
    args.settings, args.records, args.length_scale = ["equal"], 0, 1.0
    return args


def main():
    args = parse_args()
    peer_trl.serve(args, {"medjax": peer_trl.medjax_worker, "tunix": tunix_worker},
                   lambda: tunix_python(args.tunix_venv), measure, "peer_tunix_")


def measure(args, tunix_py: str, root: str) -> None:
    src, commit = peer_trl.snapshot_medjax(root)
    print(f"medjax: commit {commit} of {peer_trl.ROOT}, extracted to {src} (git archive HEAD)")
    sys.path.insert(0, src)  # this process's medjax (tokenizer, template) too
    made = prepare(args, root, src)
    print(f"model: {made['model_dir']} (random Llama, {args.shape} shape, f32, Mistral "
          f"tokenizer and template)\nequal: {made['check']}; Tunix fed the same ids "
          f"({made['ids']})")
    plan = plan_jobs(args, made, src, commit)
    results = {}
    for earlier in (m for m in args.merge.split(",") if m):
        for key, runs in peer_trl.earlier_runs(earlier).items():
            results.setdefault(key, []).extend(runs)
        print(f"merged the runs in {earlier} (as earlier repeats)")
    for rep in range(args.repeats):
        for setting, name, runs in plan:
            for fw, mode, job in runs:  # medjax, Tunix: the frameworks alternate
                job = dict(job, workdir=tempfile.mkdtemp(prefix=f"{fw}_", dir=root))
                print(f"[repeat {rep + 1}/{args.repeats}] {name}: {fw} {mode} ...", flush=True)
                python = sys.executable if fw == "medjax" else tunix_py
                r = peer_trl.run_job(args, python, job, root, script=__file__)
                results.setdefault((setting, name, fw, mode), []).append(r)
                print(f"    steps {', '.join(f'{x:.2f}' for x in r['step_times'])} s; "
                      f"real tokens/step {statistics.mean(r['real']):.0f} of "
                      f"{statistics.mean(r['positions']):.0f}; warm-up {r['warmup_s']:.1f} s;"
                      f" loss {r['loss']:.4f}; load {r['load_start']} -> {r['load_end']}; "
                      f"other processes {r['other_load']}; {r['version']}", flush=True)
    peer_trl.report(args, plan, results, peer="tunix", peer_name="Tunix")


if __name__ == "__main__":
    main()
