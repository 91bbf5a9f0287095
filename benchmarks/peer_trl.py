"""medjax vs TRL 1.16.0: DPO and SFT training throughput on the same model and data, CPU, f32.

    .venv/bin/python benchmarks/peer_trl.py                        # both settings, 1 repeat
    .venv/bin/python benchmarks/peer_trl.py --settings=equal --jobs=sft --steps=2
    .venv/bin/python benchmarks/peer_trl.py --repeats=2            # medjax, TRL, medjax, TRL

TRL runs in its own virtualenv (``--trl_venv``, default ``benchmarks/.venv-trl``, made on
first use): a venv of the same base interpreter whose ``site-packages`` also sees this
project's ``.venv`` (a ``.pth`` line), so that TRL runs on exactly the torch (2.13.0, CPU
build) and transformers that ``.venv`` has; ``pip install trl==1.16.0`` there with a
constraints file pinning every package ``.venv`` has (``torch==2.13.0`` among them), so
pip installs TRL (and ``.venv``'s setuptools version over the new venv's own) and can never
resolve another torch. medjax itself is not importable there.

The model: a random Llama of the medium shape (``train_throughput.MEDIUM``: hidden 512,
MLP 1536, 8 layers, 8 query / 4 KV heads of 64, vocabulary 32,000), made once by
transformers and saved as an HF directory with Mistral's SentencePiece tokenizer and
chat template (``medjax.data.hf_export.save_tokenizer``). Both frameworks load that
directory: medjax as ``model.init_from`` (with ``data.tokenizer=mistral``,
``data.template=mistral``), TRL with ``from_pretrained``. Before timing anything the
script checks that the directory's tokenizer renders every record to the same ids as
medjax's template does (TRL tokenises through ``apply_chat_template``).

The data (JSONL, one file per setting and objective, read by both):
  equal      every sequence exactly ``--seq_len`` tokens: DPO pairs of a prompt of seq_len / 4
             tokens (128) and two responses filling the rest (EOS included); SFT
             conversations of the same prompt and chosen response (one per packed row).
  realistic  UltraMedical-like lengths (``benchmarks/synthetic.py``: prompts 50-600,
             responses 50-900 tokens, uniform) divided by ``--length_scale``; DPO with
             ``--realistic_seq_len`` per sequence, SFT packed into rows of ``--seq_len``.

medjax is measured as committed: ``git archive HEAD medjax configs`` is extracted into the
work directory at the start and imported from there (ahead of the editable install), so
that changes others make to the work tree during a run do not reach it.

Measured, each in its own subprocess (compile / warm-up, then ``--steps`` timed steps):
  medjax  configs/dpo.py and configs/sft.py with the model, data, seq_len and batch above,
          f32, one CPU device; steps run as ``medjax.train`` runs them (``setup``, the real
          pipeline, ``build_reference``, ``device_batch`` + the jitted step). DPO references:
          frozen (a copy of the starting model, its forward timed with each step) and
          precompute (one pass before training, not timed); realistic DPO padded and
          packed (``data.pack_pairs``). A step's time excludes reading the next batch.
  TRL     DPOTrainer (loss sigmoid, beta 0.1, ref_model=None = a frozen copy, or
          precompute_ref_log_probs=True) and SFTTrainer (packing=True with TRL's default
          strategy "bfd", which makes it padding-free), per_device_train_batch_size and
          max_length as medjax's, gradient accumulation 1, no gradient checkpointing,
          fp32, dataloader workers 0, torch threads = 2. A step is timed from the
          callback's on_step_begin to on_step_end (forward, backward, clipping, AdamW,
          zero_grad; the batch is fetched before on_step_begin). Tokens are counted from
          the batches TRL fed ``training_step``.

Per setting one table: framework, mode, step s (median), tokens/s over the positions fed
(padding included), real (non-padding) tokens/s, and medjax / TRL ratios of real
tokens/s (and, with several repeats, each repeat's ratio). With ``--repeats`` > 1 the
frameworks alternate (medjax, TRL, medjax, ...) and the figures are medians over repeats;
``--merge=DIR`` counts the runs an earlier invocation left in its ``--workdir`` DIR as
earlier repeats (``--repeats=0``: report only). Each worker prints the load average and
the CPU share other processes took while it ran (``cpu_load.OtherLoad``): the machine is
shared, and separate processes one after the other see different loads.
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
ROOT = os.path.dirname(HERE)
TRL_VERSION = "1.16.0"
TORCH_VERSION = "2.13.0"

# setting -> job name -> the runs of one comparison, (framework, mode, options), in order
JOBS = {
    "equal": {
        "dpo_frozen": [("medjax", "frozen", dict(reference="frozen")),
                       ("trl", "frozen", dict(precompute=False))],
        "dpo_precompute": [("medjax", "precomputed", dict(reference="precompute")),
                           ("trl", "precomputed", dict(precompute=True))],
        "sft": [("medjax", "packed", {}), ("trl", "packed (bfd, padding-free)", {})],
    },
    "realistic": {
        "dpo_frozen": [("medjax", "frozen, padded", dict(reference="frozen", pack=False)),
                       ("trl", "frozen", dict(precompute=False)),
                       ("medjax", "frozen, pack_pairs", dict(reference="frozen", pack=True))],
        "dpo_precompute": [("medjax", "precomputed, pack_pairs",
                            dict(reference="precompute", pack=True)),
                           ("trl", "precomputed", dict(precompute=True))],
        "sft": [("medjax", "packed", {}), ("trl", "packed (bfd, padding-free)", {})],
    },
}
DEFAULT_JOBS = {"equal": ["dpo_frozen", "dpo_precompute", "sft"],
                "realistic": ["dpo_frozen", "sft"]}


def snapshot_medjax(root: str) -> tuple[str, str]:
    """medjax/ and configs/ as committed at HEAD, extracted under ``root`` for the medjax
    workers to import (others may change the work tree while this runs): (path, commit)."""
    src = os.path.join(root, "src")
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    if not os.path.isdir(src):
        os.makedirs(src)
        archive = subprocess.run(["git", "-C", ROOT, "archive", "HEAD", "medjax", "configs"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        with open(os.path.join(src, "COMMIT"), "w") as f:
            f.write(head + "\n")
    with open(os.path.join(src, "COMMIT")) as f:
        return src, f.read().strip()


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# ----------------------------------------------------------------- TRL's venv
def trl_python(venv: str) -> str:
    """The TRL venv's interpreter, made (once) as the module docstring says."""
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py):
        ok = subprocess.run([py, "-c", "import trl, sys; sys.exit(trl.__version__ != "
                             f"{TRL_VERSION!r})"], capture_output=True).returncode == 0
        if ok:
            return py
        print(f"{venv}: no TRL {TRL_VERSION}; installing it", flush=True)
    import sysconfig
    base = getattr(sys, "_base_executable", sys.executable)
    ours = sysconfig.get_paths()["purelib"]  # this project's .venv site-packages
    print(f"making {venv} (TRL {TRL_VERSION} over {ours})", flush=True)
    subprocess.run([base, "-m", "venv", venv], check=True)
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], check=True, capture_output=True,
                             text=True).stdout.strip()
    # After the venv's own site-packages: what TRL installs there comes first.
    with open(os.path.join(purelib, "zz_medjax_venv.pth"), "w") as f:
        f.write(ours + "\n")
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    pins = [line for line in freeze.splitlines()
            if "==" in line and not line.lower().startswith(("torch==", "trl=="))]
    constraints = os.path.join(venv, "constraints.txt")
    with open(constraints, "w") as f:
        f.write(f"torch=={TORCH_VERSION}\n" + "\n".join(pins) + "\n")
    subprocess.run([py, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                    f"trl=={TRL_VERSION}", "-c", constraints], check=True)
    check = (f"import torch, transformers, trl; assert trl.__version__ == {TRL_VERSION!r}; "
             f"assert torch.__version__.split('+')[0] == {TORCH_VERSION!r}; "
             "print('TRL venv:', trl.__version__, 'torch', torch.__version__, 'from', "
             "torch.__file__, 'transformers', transformers.__version__)")
    subprocess.run([py, "-c", check], check=True)
    return py


# ----------------------------------------------------------------- the model and data
SMALL = dict(vocab_size=32000, hidden_size=64, intermediate_size=128, num_layers=2,
             num_heads=4, num_kv_heads=2, head_dim=16)  # --shape=small: a quick check


def build_model(path: str, shape: str = "medium") -> None:
    """The random medium-shape Llama as an HF directory, with Mistral's tokenizer."""
    import torch
    import transformers

    from medjax.data.hf_export import save_tokenizer
    from medjax.data.templates import get_template
    from medjax.data.tokenizer import get_tokenizer
    from train_throughput import MEDIUM
    shape = MEDIUM if shape == "medium" else SMALL
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"], num_key_value_heads=shape["num_kv_heads"],
        head_dim=shape["head_dim"], max_position_embeddings=4096,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tok = get_tokenizer("mistral")
    save_tokenizer(tok, get_template("mistral", tok), path)


def exact_text(rs, n: int, count, words) -> str:
    """Random words whose encoding, ``count(text)``, has exactly ``n`` ids."""
    out = list(rs.choice(words, max(1, int(n / 1.6))))
    for _ in range(10 * n):
        k = count(" ".join(out))
        if k == n:
            return " ".join(out)
        if k > n:
            out.pop()
        else:
            out.append(rs.choice(words) if n - k > 4 else "the")
    raise RuntimeError(f"no text of exactly {n} tokens")


def write_equal(path: str, n: int, seq_len: int, template) -> None:
    """DPO records whose prompt encodes to seq_len / 4 ids (template included) and whose
    responses fill the rest of ``seq_len`` (EOS included)."""
    import numpy as np

    from synthetic import WORDS
    rs = np.random.RandomState(1)
    prompt_len = lambda t: len(template.encode_prompt([{"role": "user", "content": t}]))  # noqa: E731
    response_len = lambda t: len(template.encode_response(t))  # noqa: E731
    with open(path, "w") as f:
        for _ in range(n):
            rec = {"prompt": exact_text(rs, seq_len // 4, prompt_len, WORDS)}
            for key in ("chosen", "rejected"):
                rec[key] = exact_text(rs, seq_len - seq_len // 4, response_len, WORDS)
            f.write(json.dumps(rec) + "\n")


def chat_from_preference(src: str, dst: str) -> None:
    """SFT conversations (user prompt, assistant = the chosen response) of DPO records."""
    with open(src) as f, open(dst, "w") as g:
        for line in f:
            r = json.loads(line)
            g.write(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                             {"role": "assistant", "content": r["chosen"]}]})
                    + "\n")


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_tokenization(model_dir: str, dpo: str, sft: str, template) -> str:
    """Whether the HF directory's tokenizer (what TRL uses) renders every record to the
    ids medjax's template gives; returns a line with the sequence lengths."""
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(model_dir)

    def ids(messages, **kw):  # as TRL's data_utils._tokenize calls it
        return list(hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                           **kw)["input_ids"])

    bad, lengths = 0, []
    for r in read_jsonl(dpo):
        prompt = [{"role": "user", "content": r["prompt"]}]
        ours_p = template.encode_prompt(prompt)
        bad += ids(prompt, add_generation_prompt=True) != ours_p
        for key in ("chosen", "rejected"):
            full = ours_p + template.encode_response(r[key])
            bad += ids(prompt + [{"role": "assistant", "content": r[key]}]) != full
            lengths.append(len(full))
    n_dpo = len(lengths)
    for r in read_jsonl(sft):
        ours = template.encode_conversation(r["messages"]).ids
        bad += ids(r["messages"]) != ours
        lengths.append(len(ours))
    if bad:
        raise SystemExit(f"tokenization differs between medjax and {model_dir}'s tokenizer "
                         f"on {bad} sequences: the frameworks would not see the same tokens")
    d, s = lengths[:n_dpo], lengths[n_dpo:]
    return (f"same ids in both frameworks: {n_dpo} DPO sequences (prompt + response: "
            f"{min(d)}-{max(d)} tokens, mean {statistics.mean(d):.0f}), {len(s)} SFT "
            f"conversations ({min(s)}-{max(s)}, mean {statistics.mean(s):.0f})")


def prepare(args, root: str) -> dict:
    """The model directory and the data files of each setting."""
    from medjax.data.templates import get_template
    from medjax.data.tokenizer import get_tokenizer
    from synthetic import write_records
    tok = get_tokenizer("mistral")
    template = get_template("mistral", tok)
    model_dir = os.path.join(root, f"{args.shape}_hf")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        build_model(model_dir, args.shape)
    data = {}
    for setting in args.settings:
        dpo = os.path.join(root, f"dpo_{setting}.jsonl")
        sft = os.path.join(root, f"sft_{setting}.jsonl")
        if setting == "equal":  # enough pairs for every step, with none repeated
            write_equal(dpo, args.dpo_batch * (args.warmup + args.steps), args.seq_len,
                        template)
            chat_from_preference(dpo, sft)
        else:
            write_records(dpo, args.records, args.length_scale, "preference")
            write_records(sft, args.records, args.length_scale, "chat")
        data[setting] = {"dpo": dpo, "sft": sft,
                         "check": check_tokenization(model_dir, dpo, sft, template)}
    return {"model_dir": model_dir, "data": data}


# ----------------------------------------------------------------- workers
def _summary(times, positions, real, seqs, warmup_s, other, extra) -> dict:
    return {"step_times": times, "positions": positions, "real": real, "sequences": seqs,
            "warmup_s": warmup_s, "other_load": other, "load_end": load_line(), **extra}


def medjax_worker(job: dict) -> dict:
    import functools
    import importlib.util

    import jax
    import numpy as np

    from cpu_load import OtherLoad
    from medjax.data.pipeline import pair_real, pipeline_from_config
    from medjax.training.batches import device_batch, one_pass, to_global
    from medjax.training.reference import build_reference
    from medjax.training.state import setup

    import medjax
    dpo = job["objective"] == "dpo"
    path = os.path.join(job["src"], "configs", "dpo.py" if dpo else "sft.py")
    spec = importlib.util.spec_from_file_location("peer_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.sources = job["data"]
    c.data.eval_sources = ""
    c.data.tokenizer = "mistral"
    c.data.template = "mistral"
    c.model.init_from = job["model_dir"]
    c.model.vocab_size = 0
    c.model.dtype = c.model.param_dtype = "float32"
    c.seq_len = job["seq_len"]
    c.batch_size = job["batch"]
    c.steps = job["warmup"] + job["steps"]
    c.optimizer.grad_accum = 1
    c.mesh.fsdp = 1
    c.logging.progress = False
    if dpo:
        c.data.max_prompt_length = job["seq_len"] // 2
        c.objective.reference = job["reference"]
        c.data.pack_pairs = bool(job.get("pack"))
        c.objective.beta = 0.1
        c.objective.loss_type = "sigmoid"
    for item in job["medjax_set"]:  # --medjax_set key=value
        key, value = item.split("=", 1)
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else \
            value.lower() in ("1", "true")
    s = setup(c)
    pipe = functools.partial(pipeline_from_config, c, s.tokenizer, s.template)
    ref = None
    pre_s = 0.0
    if dpo:
        t0 = time.perf_counter()
        with jax.set_mesh(s.mesh):
            ref = build_reference(
                c, s.unit, s.mesh, s.model_config, s.state["params"],
                passes={"train": lambda: one_pass(pipe(one_pass=True), c.batch_size)()},
                workdir=job["workdir"], fingerprint=dict,
                to_global=functools.partial(to_global, sharding=s.batch_sharding),
                sharding=s.batch_sharding)["train"]
        pre_s = time.perf_counter() - t0
    it = iter(pipe())
    state = s.state
    times, positions, real, seqs = [], [], [], []
    warmup_s = 0.0
    with OtherLoad() as other:
        for i in range(job["warmup"] + job["steps"]):
            local = next(it)
            t0 = time.perf_counter()
            with jax.set_mesh(s.mesh):
                batch = device_batch(local, s.batch_sharding, ref)
                state, metrics = s.step_fn(state, batch)
                jax.block_until_ready(metrics["loss"])
            dt = time.perf_counter() - t0
            if i < job["warmup"]:
                warmup_s += dt
                continue
            seg = np.asarray(local["segment_ids"])
            times.append(dt)
            positions.append(int(seg.size))
            real.append(int((seg != 0).sum()))
            seqs.append(int(pair_real(local).sum()) if dpo
                        else int(np.asarray(local["positions"] == 0)[seg != 0].sum()))
    return _summary(times, positions, real, seqs, warmup_s, other.describe(), {
        "reference_pass_s": pre_s, "loss": float(metrics["loss"]),
        "config": {"loss_chunk_size": c.objective.loss_chunk_size,
                   "lm_head_grad": c.objective.get("lm_head_grad", "-"),
                   "remat_policy": c.model.remat_policy, "attention": c.model.attention,
                   "scan_layers": c.model.scan_layers},
        "medjax": f"commit {job['commit']} ({os.path.dirname(medjax.__file__)})",
        "version": f"jax {jax.__version__}, {jax.devices()[0].device_kind} x "
                   f"{jax.device_count()}"})


def trl_worker(job: dict) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from cpu_load import OtherLoad
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    dpo = job["objective"] == "dpo"
    rows = read_jsonl(job["data"])
    user = lambda t: [{"role": "user", "content": t}]  # noqa: E731
    assistant = lambda t: [{"role": "assistant", "content": t}]  # noqa: E731
    if dpo:
        rows = [{"prompt": user(r["prompt"]), "chosen": assistant(r["chosen"]),
                 "rejected": assistant(r["rejected"])} for r in rows]
    else:
        rows = [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    common = dict(output_dir=job["workdir"], per_device_train_batch_size=job["batch"],
                  gradient_accumulation_steps=1, max_steps=job["warmup"] + job["steps"],
                  max_length=job["seq_len"], gradient_checkpointing=False, bf16=False,
                  fp16=False, use_cpu=True, dataloader_num_workers=0,
                  logging_strategy="no", save_strategy="no", eval_strategy="no",
                  report_to="none", disable_tqdm=True, seed=0)
    record = {"times": [], "positions": [], "real": [], "seqs": []}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            record["times"].append(time.perf_counter() - self.t0)

    def count(inputs):  # the batch training_step got
        ids = inputs["input_ids"]
        record["positions"].append(int(ids.numel()))
        if "attention_mask" in inputs:
            record["real"].append(int(inputs["attention_mask"].sum()))
        else:  # padding-free: one flattened row, no padding (pad_to_multiple_of None)
            record["real"].append(int(ids.numel()))
        if dpo:
            record["seqs"].append(ids.shape[0] // 2)
        else:
            record["seqs"].append(int((inputs["position_ids"] == 0).sum())
                                  if "position_ids" in inputs else ids.shape[0])

    if dpo:
        class Timed(trl.DPOTrainer):
            def training_step(self, model, inputs, *a, **k):
                count(inputs)
                return super().training_step(model, inputs, *a, **k)

        args = trl.DPOConfig(**common, beta=0.1, loss_type=["sigmoid"],
                             precompute_ref_log_probs=job["precompute"])
        t0 = time.perf_counter()
        trainer = Timed(model=model, ref_model=None, args=args, train_dataset=dataset,
                        processing_class=tokenizer, callbacks=[Clock()])
    else:
        class Timed(trl.SFTTrainer):
            def training_step(self, model, inputs, *a, **k):
                count(inputs)
                return super().training_step(model, inputs, *a, **k)

        args = trl.SFTConfig(**common, packing=True)
        t0 = time.perf_counter()
        trainer = Timed(model=model, args=args, train_dataset=dataset,
                        processing_class=tokenizer, callbacks=[Clock()])
    init_s = time.perf_counter() - t0
    with OtherLoad() as other:
        out = trainer.train()
    w = job["warmup"]
    extra = {"init_s": init_s, "loss": float(out.training_loss),
             "settings": {"padding_free": bool(getattr(trainer, "padding_free", False)),
                          "packing_strategy": getattr(args, "packing_strategy", None),
                          "attn_implementation": model.config._attn_implementation,
                          "ref_model": ("none" if getattr(trainer, "ref_model", None) is None
                                        else "frozen copy") if dpo else "n/a",
                          "precompute_ref_log_probs": getattr(args,
                                                              "precompute_ref_log_probs", None),
                          "torch_threads": torch.get_num_threads(),
                          "max_length": args.max_length,
                          "truncation_mode": args.truncation_mode},
             "version": f"trl {trl.__version__}, torch {torch.__version__}, transformers "
                        f"{transformers.__version__}"}
    return _summary(record["times"][w:], record["positions"][w:], record["real"][w:],
                    record["seqs"][w:], sum(record["times"][:w]), other.describe(), extra)


# ----------------------------------------------------------------- orchestration
def run_job(args, python: str, job: dict, root: str, script: str = "") -> dict:
    """Runs ``job`` in a subprocess of ``python``: ``script --worker SPEC OUT`` (this file's
    workers by default); returns its result with the load at its start and its wall time."""
    fd, spec = tempfile.mkstemp(prefix="job_", suffix=".json", dir=root)
    os.close(fd)
    with open(spec, "w") as f:
        json.dump(job, f)
    out = spec[:-5] + "_out.json"
    # medjax from the snapshot (ahead of the editable install, whose finder comes last)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, job["src"]]),
               TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # one real CPU device (the test suite's environment asks XLA for 8 fake ones)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))
    load0 = load_line()
    t0 = time.perf_counter()
    log = spec[:-5] + ".log"
    with open(log, "w") as f:
        cmd = [python, os.path.abspath(script or __file__), "--worker", spec, out]
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc:
        with open(log) as f:
            tail = f.read()[-4000:]
        raise SystemExit(f"{job['framework']} {job['objective']} {job['mode']} failed "
                         f"(exit {rc}); its output ends:\n{tail}")
    with open(out) as f:
        r = json.load(f)
    r.update(load_start=load0, wall_s=time.perf_counter() - t0, log=log)
    with open(out, "w") as f:  # kept for --merge
        json.dump(r, f)
    return r


def earlier_runs(root: str) -> dict:
    """The finished jobs of an earlier invocation's ``--workdir``, oldest first."""
    import glob
    found = []
    for spec in glob.glob(os.path.join(root, "job_*.json")):
        out = spec[:-5] + "_out.json"
        if spec.endswith("_out.json") or not os.path.exists(out):
            continue
        with open(spec) as f:
            job = json.load(f)
        with open(out) as f:
            r = json.load(f)
        setting = job.get("setting") or ("equal" if "_equal." in job["data"] else "realistic")
        name = job.get("name") or ("sft" if job["objective"] == "sft" else
                                   "dpo_precompute" if job.get("reference") == "precompute"
                                   or job.get("precompute") else "dpo_frozen")
        found.append((os.path.getmtime(out), (setting, name, job["framework"], job["mode"]), r))
    runs = {}
    for _, key, r in sorted(found, key=lambda x: x[0]):
        runs.setdefault(key, []).append(dict(r, earlier=root))
    return runs


def summarise(runs: list[dict]) -> dict:
    """Medians over repeats of each run's median step and its real/position rates."""
    per = []
    for r in runs:
        t = sum(r["step_times"])
        per.append({"step": statistics.median(r["step_times"]),
                    "tok": sum(r["positions"]) / t, "real": sum(r["real"]) / t,
                    "seqs": sum(r["sequences"]) / t,
                    "fill": sum(r["real"]) / sum(r["positions"]),
                    "per_step": statistics.mean(r["real"]),
                    "seq_step": statistics.mean(r["sequences"])})
    out = {k: statistics.median(p[k] for p in per) for k in per[0]}
    out["each_real"] = [p["real"] for p in per]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", default="equal,realistic")
    p.add_argument("--jobs", default="", help="comma-separated job names (dpo_frozen, "
                   "dpo_precompute, sft); default: all of equal's, realistic's dpo_frozen "
                   "and sft")
    common_args(p)
    p.add_argument("--seq_len", type=int, default=512, help="equal: every sequence; SFT: "
                   "the packed rows (both settings)")
    p.add_argument("--realistic_seq_len", type=int, default=384,
                   help="realistic DPO: per sequence (TRL's max_length)")
    p.add_argument("--dpo_batch", type=int, default=8, help="pairs (medjax packed: rows "
                   "of 2 x seq_len)")
    p.add_argument("--sft_batch", type=int, default=8, help="packed rows")
    p.add_argument("--length_scale", type=float, default=4.0)
    p.add_argument("--records", type=int, default=200, help="realistic records per file")
    p.add_argument("--threads", type=int, default=2, help="torch threads (TRL)")
    p.add_argument("--medjax_set", action="append", default=[],
                   help="extra medjax config key=value (repeatable)")
    p.add_argument("--trl_venv", default=os.path.join(HERE, ".venv-trl"))
    p.add_argument("--workdir", default="", help="keep the model, data and logs here")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.settings = [s for s in args.settings.split(",") if s]
    sys.path.insert(0, HERE)
    serve(args, {"medjax": medjax_worker, "trl": trl_worker},
          lambda: trl_python(args.trl_venv), measure, "peer_trl_")


def common_args(p: argparse.ArgumentParser) -> None:
    """The options every peer script shares: model shape, steps, repeats, merging."""
    p.add_argument("--shape", choices=("medium", "small"), default="medium",
                   help="small: a 2-layer model of hidden 64, to check the script quickly")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation)")
    p.add_argument("--repeats", type=int, default=1, help="0 with --merge: report only")
    p.add_argument("--merge", default="", help="comma-separated --workdir(s) of earlier "
                   "invocations whose runs count as earlier repeats")


def serve(args, workers: dict, peer_python, measure, prefix: str) -> None:
    """What a peer script's ``main`` does with its parsed ``args``: with ``--worker SPEC
    OUT`` run the job's framework's worker (``workers[framework](job)``) and write its
    result; else ``measure(args, peer interpreter, root)`` in ``--workdir`` (kept) or a
    temporary directory named ``prefix...``."""
    if args.worker:
        spec, out = args.worker
        with open(spec) as f:
            job = json.load(f)
        result = workers[job["framework"]](job)
        with open(out, "w") as f:
            json.dump(result, f)
        return
    print(f"load average (1/5/15 min) at the start: {load_line()}", flush=True)
    python = peer_python()
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        measure(args, python, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as root:
            measure(args, python, root)


def measure(args, trl_py: str, root: str) -> None:
    src, commit = snapshot_medjax(root)
    print(f"medjax: commit {commit} of {ROOT}, extracted to {src} (git archive HEAD)")
    sys.path.insert(0, src)  # this process's medjax (tokenizer, template) too
    made = prepare(args, root)
    print(f"model: {made['model_dir']} (random Llama, {args.shape} shape, f32, Mistral "
          "tokenizer and template)")
    wanted = [j for j in args.jobs.split(",") if j]
    plan = []  # (setting, job name, [(framework, mode, job dict), ...])
    for setting in args.settings:
        d = made["data"][setting]
        print(f"{setting}: {d['check']}")
        for name in (wanted or DEFAULT_JOBS[setting]):
            dpo = name.startswith("dpo")
            runs = []
            for fw, mode, opts in JOBS[setting][name]:
                job = dict(framework=fw, mode=mode, objective="dpo" if dpo else "sft",
                           setting=setting, name=name,
                           data=d["dpo" if dpo else "sft"], model_dir=made["model_dir"],
                           seq_len=(args.realistic_seq_len if dpo and setting == "realistic"
                                    else args.seq_len),
                           batch=args.dpo_batch if dpo else args.sft_batch,
                           steps=args.steps, warmup=args.warmup, threads=args.threads,
                           src=src, commit=commit,
                           medjax_set=args.medjax_set, **opts)
                runs.append((fw, mode, job))
            plan.append((setting, name, runs))
    results = {}
    for earlier in (m for m in args.merge.split(",") if m):
        for key, runs in earlier_runs(earlier).items():
            results.setdefault(key, []).extend(runs)
        print(f"merged the runs in {earlier} (as earlier repeats)")
    for rep in range(args.repeats):
        for setting, name, runs in plan:
            for fw, mode, job in runs:  # medjax, TRL(, medjax): the frameworks alternate
                job = dict(job, workdir=tempfile.mkdtemp(prefix=f"{fw}_", dir=root))
                print(f"[repeat {rep + 1}/{args.repeats}] {setting} {name}: {fw} {mode} ...",
                      flush=True)
                r = run_job(args, sys.executable if fw == "medjax" else trl_py, job, root)
                results.setdefault((setting, name, fw, mode), []).append(r)
                print(f"    steps {', '.join(f'{x:.2f}' for x in r['step_times'])} s; "
                      f"real tokens/step {statistics.mean(r['real']):.0f} of "
                      f"{statistics.mean(r['positions']):.0f}; warm-up "
                      f"{r['warmup_s']:.1f} s; load {r['load_start']} -> {r['load_end']}; "
                      f"other processes {r['other_load']}; {r['version']}", flush=True)
    report(args, plan, results)


def report(args, plan, results, peer: str = "trl", peer_name: str = "TRL") -> None:
    """The tables of ``results`` (per setting), medjax / ``peer`` ratios of real tokens/s."""
    print(f"\nload average (1/5/15 min) at the end: {load_line()}")
    sources = sorted({r.get("medjax", "?") for (_, _, fw, _), rs in results.items() if fw == "medjax"
                      for r in rs})
    print(f"medjax measured: {', '.join(sources)}")
    for setting in args.settings:
        rows = [(name, fw, mode, summarise(results[(setting, name, fw, mode)]),
                 results[(setting, name, fw, mode)])
                for s, name, runs in plan if s == setting for fw, mode, _ in runs
                if (setting, name, fw, mode) in results]
        if not rows:
            continue
        print(f"\n### {setting}" + (" (every sequence "
                                     f"{args.seq_len} tokens)" if setting == "equal" else
                                     f" (lengths / {args.length_scale:g})"))
        print("runs: processes of this row (repeats, --merge included), each of "
              f"{args.steps} timed steps after {args.warmup} warm-up; step s: median of each "
              "run's median; rates: each run's tokens / its timed seconds, median over runs")
        print("| job | framework | mode | runs | seqs/step | real | step s | tokens/s | "
              "real tokens/s |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for name, fw, mode, m, runs in rows:
            print(f"| {name} | {fw} | {mode} | {len(runs)} | {m['seq_step']:.1f} | "
                  f"{m['fill']:.0%} | {m['step']:.2f} | {m['tok']:,.0f} | {m['real']:,.0f} |")
        print(f"\nmedjax / {peer_name}, real tokens/s:")
        by = {(name, fw, mode): m for name, fw, mode, m, _ in rows}
        for name, fw, mode, m, _ in rows:
            if fw != "medjax":
                continue
            for (n2, f2, mode2), m2 in by.items():
                if f2 == peer and (n2 == name or (name == "dpo_precompute"
                                                   and n2 == "dpo_frozen")):
                    each = ""
                    if len(m["each_real"]) == len(m2["each_real"]) > 1:
                        each = " (repeat by repeat: " + ", ".join(
                            f"{a / b:.2f}" for a, b in zip(m["each_real"], m2["each_real"])) + ")"
                    print(f"  {name} medjax {mode} / {peer_name} {mode2}: "
                          f"{m['real'] / m2['real']:.2f}x{each}")
        for name, fw, mode, _, runs in rows:
            extra = runs[0].get("settings") or runs[0].get("config")
            print(f"  [{fw} {name} {mode}] {runs[0]['version']}; {extra}")
            for k, r in enumerate(runs):
                print(f"      run {k + 1}: steps {', '.join(f'{x:.2f}' for x in r['step_times'])}"
                      f" s; load {r.get('load_start', '?')} -> {r['load_end']}; other "
                      f"processes {r['other_load']}")


if __name__ == "__main__":
    main()
