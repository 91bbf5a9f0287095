"""medjax vs MaxText 0.2.5: training throughput of one model shape, CPU, f32, one device.

    .venv/bin/python benchmarks/peer_maxtext.py                  # medjax, MaxText, medjax, MaxText
    .venv/bin/python benchmarks/peer_maxtext.py --repeats=1 --steps=3
    .venv/bin/python benchmarks/peer_maxtext.py --maxtext_set=remat_policy=full \
        --maxtext_set=scan_layers=true                           # MaxText's own defaults

What is compared: one training step on ``--batch`` rows of ``--seq_len`` tokens, every
position a real token (batch 8 x seq 512 = 4,096 tokens a step: ``peer_trl.py``'s equal SFT
setting), on the medium Llama (``train_throughput.MEDIUM``: hidden 512, MLP 1536, 8 layers, 8
query / 4 KV heads of 64, vocabulary 32,000; untied embeddings, RMSNorm eps 1e-5, SwiGLU, RoPE
theta 500,000 as medjax's llama3 presets), float32 weights and compute, AdamW (b1 0.9, b2
0.95, eps 1e-8, weight decay 0.1, global-norm clipping 1.0: both frameworks' defaults), no
activation recomputation, one CPU device. ``--shape=small`` (2 layers of hidden 64) checks
the script quickly.

medjax: ``configs/sft.py`` through ``train_throughput.Run`` (the train step ``medjax.train``
  builds: ``setup``, then the jitted step), ``--shape=medium`` and ``--lengths=full``: one
  batch of random ids with no padding, the loss on every position, fed every step; f32, no
  remat, layers scanned, ``model.attention=auto`` (blocked on CPU), the fused LM-head
  gradient, as the config file has them. medjax is measured as committed: ``git archive
  HEAD medjax configs`` into the work directory (``peer_trl.snapshot_medjax``). A step is
  timed from the call to the jitted step to its outputs being ready (``--warmup`` steps
  first, untimed: compilation).
MaxText: ``maxtext.trainers.pre_train.train`` run in-process by a worker of its own venv,
  with ``base.yml`` and the command-line overrides of ``maxtext_args``: the shape
  (``base_emb_dim``, ``base_num_query_heads``, ...), ``decoder_block=llama2`` (MaxText's
  Llama-3 configs use it, with ``rope_max_timescale=500000``), ``logits_via_embedding=false``
  (untied), ``dtype=float32``, ``weight_dtype=float32``, ``attention=dot_product``,
  ``hardware=cpu``, ``skip_jax_distributed_system=true`` (its CPU path otherwise wants a
  multi-host launcher's environment), ``dataset_type=synthetic`` (rows of ``max_target_length``
  tokens, one segment each: every position real, as medjax's rows),
  ``enable_checkpointing=false``, ``enable_dropout=false``, ``opt_type=adamw``,
  ``remat_policy=none`` with ``scan_layers=false``: with scanned layers MaxText always wraps
  the layer in ``jax.checkpoint`` and ``none`` would mean full recomputation (0.2.5's
  ``nnx_decoders``), so the layers are unrolled to get no remat, as medjax's default.
  ``--maxtext_set KEY=VALUE`` adds or overrides any of these (e.g. ``remat_policy=full
  scan_layers=true``, MaxText's defaults).
  MaxText's step times are its own: the ``completed step: N, seconds: S`` lines its
  ``metric_logger`` logs. S is the wall time between the end of one step's dispatch and the
  next's; the loop dispatches asynchronously and then waits for the previous step's metrics,
  so from the third step on S is one step's compute (plus the synthetic batch and logging,
  which are negligible), while steps 0 and 1 are dispatch only. ``--maxtext_warmup`` (3)
  logged steps are dropped: 0 and 1, and step 2, whose interval holds step 0's first run.
  Compilation happens before step 0 and is in none of them.

The runs alternate, each in its own subprocess: medjax, MaxText, medjax, MaxText
(``--repeats``). Before each run the script waits while another benchmark is running
(``pgrep -f`` on ``OTHER_BENCHMARKS``, this process and its ancestors excluded; polled every
30 s, at most 10 minutes; ``--no_wait`` skips it) and records what it saw. Each run records
the load average at its start and end and the CPU share other processes took during the timed
steps (``cpu_load.OtherLoad``; for MaxText from the first timed step's log line to the end of
its loop). The table is ``peer_trl.report``'s: step s (median of each run's median, then over
runs), tokens/s, and medjax / MaxText.

MaxText runs in its own virtualenv (``--maxtext_venv``, default ``benchmarks/.venv-maxtext``,
made on first use, about 1.4 GB, one to two minutes): MaxText 0.2.5 needs Python >= 3.12
(``--python``; by default the first of ``python3.12``, ``python3.13`` on PATH or under
``~/.pyenv/versions``) and its wheel declares every dependency under extras (``tpu``,
``cuda12``: Google Cloud clients, libtpu or NVIDIA wheels; ``tpu-post-train``: TensorFlow
Datasets), so the script installs ``maxtext==0.2.5`` with the packages its trainer imports
on CPU with ``DECOUPLE_GCLOUD=TRUE`` (``DEPS``, pinned to the versions measured, through a
constraints file that also pins ``torch==2.13.0``, so pip could never resolve another torch;
nothing here asks for it). JAX there is 0.12.0.1, medjax's .venv
has 0.10.2: each framework runs the XLA its own release is tested with.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peer_trl  # noqa: E402

MAXTEXT_VERSION = "0.2.5"
# What maxtext.trainers.pre_train.train imports on CPU with DECOUPLE_GCLOUD=TRUE, at the
# versions measured (the wheel itself requires nothing outside its extras).
DEPS = {"maxtext": MAXTEXT_VERSION, "jax": "0.12.0.1", "jaxlib": "0.12.0.1",
        "flax": "0.12.12", "optax": "0.2.8", "orbax-checkpoint": "0.12.8",
        "absl-py": "2.5.1", "omegaconf": "2.4.0", "pydantic": "2.14.4",
        "ml-collections": "1.1.0", "tensorboardx": "2.6.5", "jaxtyping": "0.3.11",
        "pathwaysutils": "0.1.13", "jinja2": "3.1.6", "aqtp": "0.9.0", "qwix": "0.1.8",
        "tokamax": "0.0.17", "huggingface-hub": "2.4.0", "transformers": "5.24.0",
        "grain": "0.2.18", "drjax": "0.2.1", "pillow": "13.0.0", "tiktoken": "0.14.0",
        "sentencepiece": "0.2.3", "sympy": "1.14.0"}
OTHER_BENCHMARKS = "peer_tunix|peer_trl|dpo_packing|train_throughput|memory_plan"
MEDJAX_MODE = "sft, random full rows"
MAXTEXT_MODE = "pre_train, synthetic rows"
# MaxText's config keys reported with each run (what it actually used, from its log)
REPORTED_KEYS = ("decoder_block", "dtype", "weight_dtype", "attention", "remat_policy",
                 "scan_layers", "opt_type", "adam_b1", "adam_b2", "adam_eps",
                 "adam_weight_decay", "gradient_clipping_threshold", "rope_max_timescale",
                 "logits_via_embedding", "normalization_layer_epsilon", "num_vocab_tiling",
                 "mlp_activations", "enable_dropout", "per_device_batch_size",
                 "max_target_length", "gradient_accumulation_steps")


def shape_of(name: str) -> dict:
    if name == "small":
        return dict(peer_trl.SMALL)
    from train_throughput import MEDIUM
    return dict(MEDIUM)


# ----------------------------------------------------------------- MaxText's venv
def constraints() -> str:
    """The constraints file: torch pinned (never resolved) and every package of ``DEPS``."""
    return "".join(f"{name}=={v}\n" for name, v in
                   [("torch", peer_trl.TORCH_VERSION)] + sorted(DEPS.items()))


def _version(py: str) -> tuple:
    out = subprocess.run([py, "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True)
    return tuple(int(x) for x in out.stdout.split()) if out.returncode == 0 else ()


def find_python(explicit: str = "") -> str:
    """An interpreter of Python >= 3.12 (MaxText 0.2.5's Requires-Python)."""
    found = [explicit] if explicit else (
        [shutil.which(n) for n in ("python3.12", "python3.13")]
        + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3"))))
    for py in filter(None, found):
        if _version(py) >= (3, 12):
            return py
    raise SystemExit(f"MaxText {MAXTEXT_VERSION} needs Python >= 3.12; none found "
                     f"({explicit or 'python3.12, python3.13, ~/.pyenv/versions/3.12*'}): "
                     "give one with --python")


def _maxtext_ok(py: str) -> bool:
    check = ("import importlib.metadata as m, sys; "
             f"sys.exit(m.version('maxtext') != {MAXTEXT_VERSION!r}); ")
    return subprocess.run([py, "-c", check], capture_output=True).returncode == 0


def maxtext_python(venv: str, python: str = "") -> str:
    """MaxText's venv's interpreter, made (once) as the module docstring says."""
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and _maxtext_ok(py):
        return py
    base = find_python(python)
    print(f"making {venv} (maxtext {MAXTEXT_VERSION}, Python of {base})", flush=True)
    subprocess.run([base, "-m", "venv", "--clear", venv], check=True)
    path = os.path.join(venv, "constraints.txt")
    with open(path, "w") as f:
        f.write(constraints())
    subprocess.run([py, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                    *sorted(DEPS), "-c", path], check=True)
    check = ("import importlib.util as u, importlib.metadata as m, jax; "
             "import maxtext.trainers.pre_train.train; "
             "assert u.find_spec('torch') is None, 'torch was installed'; "
             "print('MaxText venv: maxtext', m.version('maxtext'), 'jax', jax.__version__, "
             "jax.devices())")
    subprocess.run([py, "-c", check], check=True, env=dict(os.environ, DECOUPLE_GCLOUD="TRUE"))
    return py


# ----------------------------------------------------------------- MaxText's arguments and log
def maxtext_args(shape: dict, seq_len: int, batch: int, steps: int, workdir: str,
                 extra=()) -> list[str]:
    """MaxText's command-line overrides (``key=value``) for ``shape`` and this comparison;
    ``extra`` (``KEY=VALUE`` strings) replaces keys of the same name or adds others."""
    if shape["num_heads"] % shape["num_kv_heads"]:
        raise ValueError(f"{shape['num_heads']} query heads do not share "
                         f"{shape['num_kv_heads']} KV heads")
    args = {
        "run_name": "peer_maxtext", "base_output_directory": os.path.join(workdir, "out"),
        "jax_cache_dir": os.path.join(workdir, "jax_cache"),
        "hardware": "cpu", "skip_jax_distributed_system": "true",
        "dataset_type": "synthetic", "enable_checkpointing": "false",
        "enable_tensorboard": "false",
        "base_emb_dim": shape["hidden_size"], "base_mlp_dim": shape["intermediate_size"],
        "base_num_decoder_layers": shape["num_layers"],
        "base_num_query_heads": shape["num_heads"], "base_num_kv_heads": shape["num_kv_heads"],
        "head_dim": shape["head_dim"], "vocab_size": shape["vocab_size"],
        "decoder_block": "llama2", "mlp_activations": "[silu,linear]",
        "logits_via_embedding": "false", "normalization_layer_epsilon": "1e-5",
        "rope_max_timescale": 500000, "enable_dropout": "false",
        "max_target_length": seq_len, "per_device_batch_size": batch,
        "dtype": "float32", "weight_dtype": "float32", "attention": "dot_product",
        "opt_type": "adamw", "gradient_accumulation_steps": 1,
        "remat_policy": "none", "scan_layers": "false",
        "steps": steps, "log_period": 1000000,
    }
    for item in extra:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--maxtext_set {item!r}: expected KEY=VALUE")
        args[key] = value
    return [f"{k}={v}" for k, v in args.items()]


STEP_RE = re.compile(r"completed step: (\d+), seconds: ([0-9.]+)(?:.*?Tokens/s/device: "
                     r"([0-9.]+))?(?:.*?total_weights: (\d+))?(?:.*?[, ]loss: ([0-9.naif]+))?")
CONFIG_RE = re.compile(r"Config param (\w+): (.*?)\s*$")
TFLOPS_RE = re.compile(r"Total TFLOPs: ([0-9.]+)")
PARAMS_RE = re.compile(r"number parameters: ([0-9.]+) billion")


def parse_log(text: str) -> dict:
    """MaxText's log: each ``completed step`` line (step, seconds, tokens/s, weights, loss),
    its config (``Config param`` lines), TFLOPs per step and parameters (billions)."""
    steps, config, tflops, params = [], {}, None, None
    for line in text.splitlines():
        m = STEP_RE.search(line)
        if m:
            steps.append({"step": int(m[1]), "seconds": float(m[2]),
                          "tokens_per_s": float(m[3]) if m[3] else None,
                          "weights": int(m[4]) if m[4] else None,
                          "loss": float(m[5]) if m[5] else None})
            continue
        m = CONFIG_RE.search(line)
        if m:
            config[m[1]] = m[2]
            continue
        m = TFLOPS_RE.search(line)
        if m:
            tflops = float(m[1])
        m = PARAMS_RE.search(line)
        if m:
            params = float(m[1])
    return {"steps": steps, "config": config, "tflops_per_step": tflops,
            "params_billion": params}


def maxtext_result(text: str, job: dict, other: str) -> dict:
    """The run's summary (``peer_trl._summary``'s fields) from MaxText's log ``text``:
    logged steps ``job['maxtext_warmup']`` and on are timed, each a batch of full rows;
    ``warmup_s`` is the dropped steps' seconds (MaxText compiles before its step 0)."""
    log = parse_log(text)
    w, n = job["maxtext_warmup"], job["steps"]
    timed = [s for s in log["steps"] if s["step"] >= w]
    if [s["step"] for s in timed] != list(range(w, w + n)):
        raise ValueError(f"MaxText logged steps {[s['step'] for s in log['steps']]}: expected "
                         f"0-{w + n - 1} ({w} warm-up, {n} timed)")
    tokens = job["batch"] * job["seq_len"]
    extra = {"config": {k: log["config"][k] for k in REPORTED_KEYS if k in log["config"]},
             "tflops_per_step": log["tflops_per_step"], "params_billion": log["params_billion"],
             "warmup_steps_s": [s["seconds"] for s in log["steps"] if s["step"] < w],
             "loss": timed[-1]["loss"]}
    summary = peer_trl._summary([s["seconds"] for s in timed], [tokens] * n, [tokens] * n,
                                [job["batch"]] * n, sum(extra["warmup_steps_s"]), other,
                                extra)
    return summary


# ----------------------------------------------------------------- other benchmarks
def own_pids(pid: int | None = None) -> set[int]:
    """This process and its ancestors (a shell that started this script matches too)."""
    pid, out = pid or os.getpid(), set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def others_in(pgrep_output: str, own: set[int]) -> list[str]:
    """The ``pgrep -af`` lines (``PID COMMAND``) of processes not in ``own``."""
    out = []
    for line in pgrep_output.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if pid.isdigit() and int(pid) not in own:
            out.append(f"{pid} {cmd.strip()}")
    return out


def other_benchmarks() -> list[str]:
    out = subprocess.run(["pgrep", "-af", OTHER_BENCHMARKS], capture_output=True, text=True)
    return others_in(out.stdout, own_pids())


def wait_for_others(poll_s: float = 30, limit_s: float = 600, sleep=time.sleep,
                    find=other_benchmarks, say=None) -> dict:
    """Waits while another benchmark runs (at most ``limit_s``): {"seen": what ran, in the
    first look where any did; "waited_s"; "still": what still ran at the end}."""
    seen, waited = find(), 0.0
    now = seen
    if seen and say:
        say(f"    waiting (up to {limit_s:.0f} s) for: " + "; ".join(x[:160] for x in seen))
    while now and waited < limit_s:
        sleep(poll_s)
        waited += poll_s
        now = find()
    return {"seen": seen, "waited_s": waited, "still": now}


# ----------------------------------------------------------------- workers
def medjax_worker(job: dict) -> dict:
    """configs/sft.py on random full rows through ``train_throughput.Run``."""
    import importlib.util

    import jax

    import medjax
    import train_throughput as tt
    from cpu_load import OtherLoad
    spec = importlib.util.spec_from_file_location(
        "peer_config", os.path.join(job["src"], "configs", "sft.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    opts = tt.Options(steps=job["steps"], warmup=job["warmup"],
                      shape="medium" if job["shape"] == "medium" else "")
    with c.unlocked():
        c.seq_len, c.batch_size = job["seq_len"], job["batch"]
        c.model.dtype = c.model.param_dtype = "float32"
        c.optimizer.grad_accum = 1
        c.mesh.fsdp = 1
        c.logging.progress = False
        if job["shape"] != "medium":  # the preset llama3_tiny is peer_trl.SMALL with 512 ids
            c.model.vocab_size = peer_trl.SMALL["vocab_size"]
    if job["medjax_set"]:
        c = tt.with_overrides(c, ";".join(job["medjax_set"]))
    tt.prepare(c, opts, job["workdir"])
    run = tt.Run(c, opts)
    for _ in range(opts.warmup):
        run.step(timed=False)
    with OtherLoad() as other:
        for _ in range(opts.steps):
            run.step(timed=True)
    r = run.result()
    n = len(r["step_times"])
    tokens = int(r["tokens"])
    mc = r["model_config"]
    return peer_trl._summary(r["step_times"], [tokens] * n, [int(r["real"] / r["batches"])] * n,
                             [job["batch"]] * n, r["warmup_s"], other.describe(), {
        "loss": r["loss"], "tflops_per_step": r["flops"] * tokens / 1e12,
        "params_billion": r["num_params"] / 1e9,
        "config": {"remat_policy": c.model.remat_policy, "scan_layers": c.model.scan_layers,
                   "attention": c.model.attention, "loss_chunk_size":
                   c.objective.loss_chunk_size, "lm_head_grad": c.objective.get("lm_head_grad",
                                                                                "-"),
                   "rope_theta": mc.rope_theta, "tie_embeddings":
                   mc.tie_embeddings, "lr": c.optimizer.lr,
                   "b2": c.optimizer.b2, "weight_decay": c.optimizer.weight_decay,
                   "clip_norm": c.optimizer.clip_norm},
        "medjax": f"commit {job['commit']} ({os.path.dirname(medjax.__file__)})",
        "version": f"jax {jax.__version__}, {jax.devices()[0].device_kind} x "
                   f"{jax.device_count()}"})


def maxtext_worker(job: dict) -> dict:
    """MaxText's trainer in this process (MaxText's venv); its log lines kept and parsed."""
    os.environ["DECOUPLE_GCLOUD"] = "TRUE"  # no Google Cloud clients (stubs)
    import importlib.metadata
    import logging

    from absl import app
    from absl import logging as absl_logging

    from cpu_load import OtherLoad
    lines = []
    other = OtherLoad()
    first_timed = max(job["maxtext_warmup"] - 1, -1)  # its line is logged as step w starts

    class Keep(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            lines.append(msg)
            m = STEP_RE.search(msg)
            if m and int(m[1]) == first_timed:
                other.__enter__()

    class Tee:  # MaxText prints its TFLOPs per step to stdout
        def __init__(self, stream):
            self.stream = stream

        def write(self, s):
            lines.append(s)
            return self.stream.write(s)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger().addHandler(Keep())  # absl and std loggers (pyconfig) propagate here
    sys.stdout = Tee(sys.stdout)
    import jax
    import maxtext
    from maxtext.trainers.pre_train import train
    if first_timed < 0:
        other.__enter__()
    base = os.path.join(os.path.dirname(maxtext.__file__), "configs", "base.yml")
    t0 = time.perf_counter()
    try:
        app.run(train.main, argv=["train", base] + job["args"])
    except SystemExit as e:
        if e.code:
            raise
    wall = time.perf_counter() - t0
    other.__exit__(None, None, None)
    sys.stdout = sys.stdout.stream
    r = maxtext_result("\n".join(lines), job, other.describe())
    r.update(maxtext_wall_s=wall, version=f"maxtext {importlib.metadata.version('maxtext')}, "
             f"jax {jax.__version__}, {jax.devices()[0].device_kind} x {jax.device_count()}")
    return r


# ----------------------------------------------------------------- orchestration
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=("medium", "small"), default="medium")
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch", type=int, default=8, help="rows a step")
    p.add_argument("--steps", type=int, default=5, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="medjax: untimed steps first")
    p.add_argument("--maxtext_warmup", type=int, default=3,
                   help="MaxText: logged steps dropped (0, 1: dispatch only; 2: step 0's run)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--maxtext_set", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--medjax_set", action="append", default=[],
                   help="medjax config KEY=VALUE (repeatable)")
    p.add_argument("--maxtext_venv", default=os.path.join(HERE, ".venv-maxtext"))
    p.add_argument("--python", default="", help="Python >= 3.12 for MaxText's venv")
    p.add_argument("--no_wait", action="store_true",
                   help="do not wait for other benchmarks before each run")
    p.add_argument("--workdir", default="")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if min(a.steps, a.batch, a.seq_len) < 1 or a.warmup < 0 or a.maxtext_warmup < 0:
        p.error("--steps, --batch, --seq_len must be positive, the warm-ups not negative")
    a.settings, a.length_scale = ["equal"], 1.0  # what peer_trl.report reads
    return a


def plan_jobs(args, src: str, commit: str, root: str) -> list[tuple[str, str, dict]]:
    """(framework, mode, job) of one repeat, medjax first."""
    common = dict(objective="sft", setting="equal", name="sft", shape=args.shape,
                  seq_len=args.seq_len, batch=args.batch, steps=args.steps, src=src,
                  commit=commit)
    medjax = dict(common, framework="medjax", mode=MEDJAX_MODE, warmup=args.warmup,
                  medjax_set=args.medjax_set)
    maxtext = dict(common, framework="maxtext", mode=MAXTEXT_MODE,
                   maxtext_warmup=args.maxtext_warmup, maxtext_set=args.maxtext_set)
    return [("medjax", MEDJAX_MODE, medjax), ("maxtext", MAXTEXT_MODE, maxtext)]


def main(argv=None):
    args = parse_args(argv)
    peer_trl.serve(args, {"medjax": medjax_worker, "maxtext": maxtext_worker},
                   lambda: maxtext_python(args.maxtext_venv, args.python), measure,
                   "peer_maxtext_")


def measure(args, maxtext_py: str, root: str) -> dict:
    src, commit = peer_trl.snapshot_medjax(root)
    print(f"medjax: commit {commit} of {peer_trl.ROOT}, extracted to {src} (git archive HEAD)")
    shape = shape_of(args.shape)
    print(f"shape ({args.shape}): {shape}; {args.batch} rows x {args.seq_len} tokens a step")
    plan = plan_jobs(args, src, commit, root)
    results = {}
    for rep in range(args.repeats):
        for fw, mode, job in plan:
            wait = {"seen": [], "waited_s": 0.0, "still": []} if args.no_wait else \
                wait_for_others(say=lambda m: print(m, flush=True))
            for line in wait["still"]:
                print(f"    still running after {wait['waited_s']:.0f} s: {line[:200]}",
                      flush=True)
            job = dict(job, workdir=tempfile.mkdtemp(prefix=f"{fw}_", dir=root))
            if fw == "maxtext":
                job["args"] = maxtext_args(shape, args.seq_len, args.batch,
                                           args.maxtext_warmup + args.steps, job["workdir"],
                                           args.maxtext_set)
            print(f"[repeat {rep + 1}/{args.repeats}] {fw} {mode} (waited "
                  f"{wait['waited_s']:.0f} s for others) ...", flush=True)
            r = peer_trl.run_job(args, sys.executable if fw == "medjax" else maxtext_py, job,
                                 root, script=__file__)
            r.update(wait=wait, others_after=[] if args.no_wait else other_benchmarks())
            results.setdefault(("equal", "sft", fw, mode), []).append(r)
            print(f"    steps {', '.join(f'{x:.2f}' for x in r['step_times'])} s; "
                  f"{r['tflops_per_step']:.3f} TFLOP a step (its own count); warm-up "
                  f"{r['warmup_s']:.1f} s; load {r['load_start']} -> {r['load_end']}; other "
                  f"processes {r['other_load']}; {r['version']}", flush=True)
            if r["others_after"]:
                print(f"    running at its end: {'; '.join(x[:120] for x in r['others_after'])}")
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump({" | ".join(k): v for k, v in results.items()}, f, indent=1)
    runs = [("medjax", MEDJAX_MODE, None), ("maxtext", MAXTEXT_MODE, None)]
    peer_trl.report(args, [("equal", "sft", runs)], results, peer="maxtext",
                    peer_name="MaxText")
    return results


if __name__ == "__main__":
    main()
