"""Multiple-choice evaluation speed: medjax vs lm-evaluation-harness (``hf``), same weights.

    .venv/bin/python benchmarks/evaluate.py --lm_eval_python=/tmp/lmenv/bin/python \\
        [--limit=200] [--batch_size=8] [--repeats=3] [--lm_eval_batch1] [--keep=DIR]

lm-eval runs in its own Python (``--lm_eval_python``; default: this one, if it can
import ``lm_eval``). To make one::

    python -m venv /tmp/lmenv && /tmp/lmenv/bin/pip install 'lm_eval[hf]==0.4.13' torch==2.13.0

(the ``hf`` extra brings ``accelerate``, which lm-eval's ``hf`` model needs; torch pinned).

One random model of the "medium" shape (hidden 512, intermediate 1536, 8 layers, 8 query
/ 4 KV heads, vocabulary 32,000, float32) is built with transformers and saved with
``save_pretrained`` to a temporary directory, together with a Hugging Face tokenizer made
offline from Mistral-7B-v0.1's SentencePiece model (shipped in ``mistral_common``; saved
with ``add_bos_token=True``, as Mistral-7B's own tokenizer is). Both frameworks load that
directory. The task is MedQA (``medqa_4options``, 0-shot, letters A-D scored as
continuations) on the first ``limit`` questions of the bundled sample
``medjax/data/samples/mcq.jsonl``: medjax reads the original layout
(question/options/answer_idx) as its built-in ``medqa_4options``; lm-eval reads the same
records converted to the Hugging Face layout (sent1/ending0..3/label) through a local task
YAML (``medqa_local``, ``--include_path``) whose prompt, choices and metrics are those of
lm-eval's ``medqa_4options``. Both add BOS (lm-eval ``add_bos_token=True``, medjax
``add_bos=True``; the tokenizer's default adds it too, so this is also what either does
unasked) and use the same window (lm-eval's ``max_length``).

Timed (``time.perf_counter``; model loading excluded unless said): after one untimed
first run of each, ``repeats`` rounds of medjax's and lm-eval's runs in turn (so that the
load of other processes on the machine falls on both alike); the median is reported.

  medjax   ``medjax.evals.run.evaluate`` on a loaded model (tokenization, scoring,
           metrics, samples): the headline; ``medjax.evaluate.run`` end to end (model
           load included); its first call's extra time (JIT compile) separately.
  lm-eval  ``lm_eval.simple_evaluate(model=HFLM(...), log_samples=True)`` in a worker
           process run by ``--lm_eval_python`` (HFLM built once beforehand, so model
           loading and start-up are excluded): the headline; inside it,
           ``HFLM.loglikelihood`` alone (tokenization and forward passes, without task
           building and metrics); the worker's start-up (imports, task index, model
           builds) for reference.

Reported: questions/s of each, the ratios medjax / lm-eval, the compile time, agreement
(identical prompts, equal predicted answers, max |difference| of per-choice
log-likelihoods vs lm-eval's logged samples), versions, thread counts, and how much CPU
other processes used during each timed part: numbers taken on a busy machine are noisy.
The CLI equivalent of the lm-eval side is printed too. The defaults took about 9 minutes
on 2 CPU cores of which other jobs used one (``--lm_eval_batch1`` adds about 2.5x
lm-eval's share).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("limit", 200, "Questions (the first N of the bundled 200-question sample).")
flags.DEFINE_integer("batch_size", 8, "Rows per forward pass, both frameworks.")
flags.DEFINE_integer("repeats", 3, "Timed runs per setting after one untimed first run (median).")
flags.DEFINE_bool("lm_eval_batch1", False, "Also time lm-eval at its own default batch size "
                  "1 (slow: about 2.5x the batch-8 time).")
flags.DEFINE_string("lm_eval_python", None, "A Python that can import lm_eval (0.4.13) with "
                    "its hf extra (torch, accelerate) (default: this Python, if it can).")
flags.DEFINE_string("keep", None, "Keep the model, task files, lm-eval's log and both "
                    "frameworks' samples (samples.json) in this directory (default: a "
                    "temporary directory, removed at the end).")

SHAPE = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
             rope_theta=500000.0, bos_token_id=1, eos_token_id=2)
TASK = "medqa_local"
VENV_HINT = ("python -m venv /tmp/lmenv && /tmp/lmenv/bin/pip install 'lm_eval[hf]==0.4.13' "
             "torch==2.13.0")

# Run by --lm_eval_python as a worker, so that its timed runs can alternate with medjax's
# (the machine's other load then falls on both alike). argv[1]: a JSON config. Protocol on
# the worker's original stdout (everything lm-eval prints goes to stderr, the log): one
# JSON line when ready, then one JSON line per "run <batch size>" line read from stdin;
# "quit" ends it.
LM_EVAL_SCRIPT = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr

def cpu_sample():
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    t = os.times()
    return [sum(f), f[3] + f[4], f[7], t.user + t.system]

def send(obj):
    reply.write(json.dumps(obj) + "\n")
    reply.flush()

t0 = time.perf_counter()
import importlib.metadata as md
import torch, transformers
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
meta = {"import_s": time.perf_counter() - t0, "torch": torch.__version__,
        "transformers": transformers.__version__, "lm_eval": md.version("lm_eval"),
        "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
        "load_s": {}, "max_length": {}}
t = time.perf_counter()
tm = TaskManager(include_path=cfg["include_path"])
meta["task_index_s"] = time.perf_counter() - t
plain = transformers.AutoTokenizer.from_pretrained(cfg["model"])
meta["tokenizer_default_bos"] = plain.encode("a")[:1] == [plain.bos_token_id]
models, ll_times = {}, []
for bs in cfg["batch_sizes"]:
    t = time.perf_counter()
    lm = HFLM(pretrained=cfg["model"], dtype="float32", add_bos_token=True, batch_size=bs,
              device="cpu")
    meta["load_s"][bs], meta["max_length"][bs] = time.perf_counter() - t, lm.max_length

    def timed(requests, *args, _inner=lm.loglikelihood, **kwargs):
        s = time.perf_counter()
        out = _inner(requests, *args, **kwargs)
        ll_times.append(time.perf_counter() - s)
        return out

    lm.loglikelihood = timed
    models[bs] = lm
send(meta)
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
        break
    del ll_times[:]
    a, s = cpu_sample(), time.perf_counter()
    res = simple_evaluate(model=models[int(cmd[1])], tasks=[cfg["task"]], task_manager=tm,
                          log_samples=True)
    took, b = time.perf_counter() - s, cpu_sample()
    send({"time_s": took, "ll_s": sum(ll_times), "cpu": [a, b],
          "results": res["results"][cfg["task"]],
          "samples": [{"doc_id": x["doc_id"], "target": x["target"],
                       "contexts": [list(r)[0] for r in x["arguments"]],
                       "continuations": [list(r)[1] for r in x["arguments"]],
                       "lls": [float(r[0]) for r in x["filtered_resps"]],
                       "acc": x["acc"], "acc_norm": x["acc_norm"]}
                      for x in res["samples"][cfg["task"]]]})
"""


class OtherLoad:
    """CPU share used by other processes between two /proc/stat samples (Linux only):
    all CPUs' busy time minus this process's own CPU time (and its children's)."""

    @staticmethod
    def sample():
        try:
            with open("/proc/stat") as fh:
                f = [int(x) for x in fh.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        t = os.times()
        return [sum(f), f[3] + f[4], f[7], t.user + t.system + t.children_user
                + t.children_system]

    @staticmethod
    def share(a, b) -> float | None:
        if a is None or b is None:
            return None
        total, idle, steal, own = (y - x for x, y in zip(a, b))
        if total <= 0:
            return None
        return max(0.0, (total - idle - steal - own * os.sysconf("SC_CLK_TCK")) / total)


def _describe_load(pairs) -> str:
    shares = [OtherLoad.share(a, b) for a, b in pairs]
    shares = [s for s in shares if s is not None]
    if not shares:
        return "unknown"
    return f"{100 * statistics.median(shares):.0f}% (max {100 * max(shares):.0f}%)"


class Timed:
    """Seconds and other processes' CPU samples of each call of ``fn``."""

    def __init__(self, fn):
        self.fn, self.times, self.loads, self.last = fn, [], [], None

    def __call__(self):
        a, t = OtherLoad.sample(), time.perf_counter()
        self.last = self.fn()
        self.times.append(time.perf_counter() - t)
        self.loads.append((a, OtherLoad.sample()))
        return self.last


def _lm_eval_python() -> str:
    python = FLAGS.lm_eval_python or sys.executable
    ok = subprocess.run([python, "-c", "import lm_eval.models.huggingface"],
                        capture_output=True).returncode
    if ok != 0:
        who = "--lm_eval_python" if FLAGS.lm_eval_python else "this Python"
        sys.exit(f"benchmarks/evaluate.py: error: {who} ({python}) can not import lm_eval's "
                 f"hf model (lm_eval, torch, accelerate); make a virtualenv with `{VENV_HINT}` "
                 "and pass --lm_eval_python=/tmp/lmenv/bin/python")
    return python


def build_model(work: str) -> str:
    """The random medium Llama and the Mistral tokenizer, saved in ``work``/model."""
    import torch
    import transformers

    from medjax.data.tokenizer import MISTRAL_MODEL, _package_file

    src, model_dir = os.path.join(work, "src"), os.path.join(work, "model")
    os.makedirs(src, exist_ok=True)
    shutil.copy(_package_file(*MISTRAL_MODEL), os.path.join(src, "tokenizer.model"))
    transformers.LlamaTokenizer.from_pretrained(src, add_bos_token=True).save_pretrained(
        model_dir)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE)).eval()
    hf.save_pretrained(model_dir)
    return model_dir


def write_tasks(work: str, limit: int) -> tuple[str, str, int]:
    """(medjax data dir, lm-eval include dir, questions): the first ``limit`` sample
    questions in both layouts and lm-eval's task YAML."""
    from medjax.data.samples import path as sample_path

    with open(sample_path("mcq.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()][:limit]
    data_dir, include = os.path.join(work, "medjax_data"), os.path.join(work, "lm_eval_tasks")
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(include, exist_ok=True)
    with open(os.path.join(data_dir, "medqa.jsonl"), "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    hf_file = os.path.join(include, "medqa_hf_layout.jsonl")
    with open(hf_file, "w", encoding="utf-8") as f:
        for r in records:
            keys = sorted(r["options"])
            row = {"sent1": r["question"], **{f"ending{i}": r["options"][k]
                                              for i, k in enumerate(keys)},
                   "label": keys.index(r["answer_idx"])}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    prompt = ("Question: {{sent1}}\nA. {{ending0}}\nB. {{ending1}}\nC. {{ending2}}\n"
              "D. {{ending3}}\nAnswer:")
    with open(os.path.join(include, f"{TASK}.yaml"), "w", encoding="utf-8") as f:
        f.write(f"task: {TASK}\n"
                "dataset_path: json\n"
                "dataset_kwargs:\n"
                "  data_files:\n"
                f"    test: {json.dumps(hf_file)}\n"
                "output_type: multiple_choice\n"
                "test_split: test\n"
                f"doc_to_text: {json.dumps(prompt)}\n"
                "doc_to_target: label\n"
                "doc_to_choice: ['A', 'B', 'C', 'D']\n"
                "metric_list:\n"
                "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
                "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")
    return data_dir, include, len(records)


class LmEvalWorker:
    """lm-eval in its own Python (``LM_EVAL_SCRIPT``): started once, models built, then one
    ``simple_evaluate`` per ``run(batch_size)``."""

    def __init__(self, python: str, model_dir: str, include: str, work: str, batch_sizes):
        self.log = os.path.join(work, "lm_eval.log")
        cfg = dict(model=model_dir, include_path=include, task=TASK, batch_sizes=batch_sizes)
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   HF_DATASETS_CACHE=os.path.join(work, "hf_datasets"))
        self._log = open(self.log, "w")
        self.start = OtherLoad.sample()
        t = time.perf_counter()
        self.proc = subprocess.Popen([python, "-c", LM_EVAL_SCRIPT, json.dumps(cfg)], env=env,
                                     cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        self.meta = self._read()
        self.ready_s = time.perf_counter() - t
        self.times = {b: [] for b in batch_sizes}
        self.ll_times = {b: [] for b in batch_sizes}
        self.loads = {b: [] for b in batch_sizes}
        self.first, self.last = {}, {}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self._log.close()
            with open(self.log) as fh:
                tail = fh.read()[-4000:]
            sys.exit(f"{tail}\nbenchmarks/evaluate.py: error: the lm-eval worker failed (exit "
                     f"{self.proc.returncode}); its log is above and in {self.log}")
        return json.loads(line)

    def run(self, batch_size: int, timed: bool = True) -> dict:
        self.proc.stdin.write(f"run {batch_size}\n")
        self.proc.stdin.flush()
        out = self._read()
        if timed:
            self.times[batch_size].append(out["time_s"])
            self.ll_times[batch_size].append(out["ll_s"])
            self.loads[batch_size].append(tuple(out["cpu"]))
        else:
            self.first[batch_size] = out["time_s"]
        self.last[batch_size] = out
        return out

    def close(self, kill: bool = False) -> None:
        """Ends the worker: asks it to quit, or (after an error here) kills it."""
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait()
        self._log.close()


def compare(medjax_samples, lm_samples):
    """(same prompts, same predictions, same acc, max |delta ll|, n) vs lm-eval's samples."""
    import numpy as np

    theirs = {s["doc_id"]: s for s in lm_samples}
    same_ctx = same_pred = same_acc = 0
    max_diff = 0.0
    for s in medjax_samples:
        o = theirs[s["doc_id"]]
        mine = np.array([r[0] for r in s["filtered_resps"]])
        other = np.array(o["lls"])
        same_ctx += [a[0] for a in s["arguments"]] == o["contexts"] and \
            [a[1] for a in s["arguments"]] == o["continuations"]
        same_pred += int(np.argmax(mine) == np.argmax(other))
        same_acc += s["acc"] == o["acc"] and s["acc_norm"] == o["acc_norm"]
        max_diff = max(max_diff, float(np.max(np.abs(mine - other))))
    return same_ctx, same_pred, same_acc, max_diff, len(medjax_samples)


def main(argv):
    del argv
    if FLAGS.repeats < 1 or FLAGS.limit < 1 or FLAGS.batch_size < 1:
        sys.exit("benchmarks/evaluate.py: error: --limit, --batch_size and --repeats must be "
                 ">= 1")
    lm_python = _lm_eval_python()
    import jax
    import torch

    from medjax.data.model_tools import model_data_tools
    from medjax.evals.run import evaluate
    from medjax.evals.score import tokenizer_adds_bos
    from medjax.evals.tasks import resolve
    from medjax.evaluate import run
    from medjax.models.load import load

    work = FLAGS.keep or tempfile.mkdtemp(prefix="medjax_eval_bench_")
    os.makedirs(work, exist_ok=True)
    bs = FLAGS.batch_size
    batch_sizes = [bs] + ([1] if FLAGS.lm_eval_batch1 and bs != 1 else [])
    worker = None
    try:
        model_dir = build_model(work)
        data_dir, include, n = write_tasks(work, FLAGS.limit)
        worker = LmEvalWorker(lm_python, model_dir, include, work, batch_sizes)
        window = worker.meta["max_length"][str(bs)]  # medjax uses lm-eval's window

        lines = []
        kwargs = dict(data_dir=data_dir, add_bos="true", batch_size=bs, max_length=window,
                      progress=False, print_fn=lines.append)
        medjax_run = Timed(lambda: run(model_dir, ["medqa_4options"], **kwargs))
        t = time.perf_counter()
        run(model_dir, ["medqa_4options"], **kwargs)  # model load + JIT compile + scoring
        first_run = time.perf_counter() - t
        model = load(model_dir)
        tok, _ = model_data_tools(model, model_dir, warn=lambda m: print("warning:", m))
        tasks, groups = resolve(["medqa_4options"], data_dir)
        medjax_eval = Timed(lambda: evaluate(model.config, model.params, tok, tasks, groups,
                                             add_bos=True, max_length=window, batch_size=bs,
                                             progress=False))
        t = time.perf_counter()
        evaluate(model.config, model.params, tok, tasks, groups, add_bos=True,
                 max_length=window, batch_size=bs, progress=False)
        first_eval = time.perf_counter() - t
        for b in batch_sizes:
            worker.run(b, timed=False)
        for _ in range(FLAGS.repeats):  # alternate, so that drifting load hits all alike
            medjax_eval()
            for b in batch_sizes:
                worker.run(b)
            medjax_run()
        worker.close()
        life = OtherLoad.sample()
        medjax_auto_bos = tokenizer_adds_bos(tok)
        if FLAGS.keep:
            with open(os.path.join(work, "samples.json"), "w", encoding="utf-8") as f:
                json.dump({"medjax": medjax_eval.last["samples"]["medqa_4options"],
                           "lm_eval": worker.last[bs]["samples"]}, f, default=str)
    finally:
        if worker is not None:
            worker.close(kill=True)  # a no-op unless something above failed
        if not FLAGS.keep:
            shutil.rmtree(work, ignore_errors=True)

    # ---------------------------------------------------------------- report
    med = statistics.median
    lm = worker.meta
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(model.params))
    shape = {k: SHAPE[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads", "vocab_size")}
    print(f"model: random Llama {shape}, {n_params:,} parameters, float32; tokenizer "
          f"Mistral-7B-v0.1 SentencePiece as a HF LlamaTokenizer (adds BOS by default: medjax "
          f"--add_bos=auto says {medjax_auto_bos}, transformers says "
          f"{lm['tokenizer_default_bos']})")
    print(f"task: MedQA 4 options, 0-shot, {n} questions x 4 choices; BOS added by both; "
          f"window {window} tokens; batch size {bs}; median of {FLAGS.repeats} timed runs "
          "(after one untimed run), medjax and lm-eval runs alternating")
    print(f"medjax: JAX {jax.__version__} on {jax.devices()[0].platform} "
          f"({jax.device_count()} device; XLA's CPU client uses all usable CPUs), python "
          f"{sys.version.split()[0]}")
    print(f"lm-eval: lm_eval {lm['lm_eval']}, torch {lm['torch']} with {lm['torch_threads']} "
          f"intra-op threads, transformers {lm['transformers']}, python {lm['python']} "
          f"({lm_python}); medjax's process: torch {torch.__version__} (model building only)")
    print(f"machine: {os.cpu_count()} CPUs, {cpus} usable; load average at the end "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    rows = [(f"medjax evaluate() (model loaded), batch {bs}", med(medjax_eval.times),
             medjax_eval.loads),
            (f"medjax run() (incl. model load), batch {bs}", med(medjax_run.times),
             medjax_run.loads)]
    for b in batch_sizes:
        rows.append((f"lm-eval simple_evaluate() (model built), batch {b}",
                     med(worker.times[b]), worker.loads[b]))
        rows.append((f"lm-eval HFLM.loglikelihood only, batch {b}", med(worker.ll_times[b]),
                     worker.loads[b]))
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | median s | questions/s | other processes' CPU |")
    print(f"|{'-' * (width + 2)}|---------:|------------:|---------------------:|")
    for name, secs, loads in rows:
        print(f"| {name:<{width}} | {secs:8.2f} | {n / secs:11.1f} | "
              f"{_describe_load(loads):>20} |")
    print()
    eval_qps = n / med(medjax_eval.times)
    lm_qps = n / med(worker.times[bs])
    print(f"ratio medjax / lm-eval questions/s, batch {bs}: {eval_qps / lm_qps:.2f}x "
          f"(evaluate() vs simple_evaluate(), the headline); "
          f"{eval_qps * med(worker.ll_times[bs]) / n:.2f}x (evaluate() vs lm-eval's "
          f"loglikelihood alone); {n / med(medjax_run.times) / lm_qps:.2f}x (run(), model "
          "load included, vs simple_evaluate())")
    if 1 in worker.times and bs != 1:
        print(f"ratio medjax (batch {bs}) / lm-eval at its default batch size 1: "
              f"{eval_qps * med(worker.times[1]) / n:.2f}x")
    print(f"medjax first calls: run() {first_run:.2f} s (model load + JIT compile + scoring; "
          f"compile and first-call overhead = first - median run() = "
          f"{first_run - med(medjax_run.times):.2f} s), then evaluate() {first_eval:.2f} s")
    print("lm-eval first simple_evaluate(): " + ", ".join(
        f"batch {b} {worker.first[b]:.2f} s" for b in batch_sizes) + "; HFLM build (model "
        "load): " + ", ".join(f"batch {b} {lm['load_s'][str(b)]:.2f} s" for b in batch_sizes)
        + f"; worker start to ready {worker.ready_s:.1f} s (imports {lm['import_s']:.1f} s, "
        f"task index {lm['task_index_s']:.1f} s, model builds)")
    print("other processes' CPU from the lm-eval worker's start to the end: "
          f"{_describe_load([(worker.start, life)])}")
    ctx, pred, acc, diff, m = compare(medjax_eval.last["samples"]["medqa_4options"],
                                      worker.last[bs]["samples"])
    mine = medjax_eval.last["results"]["medqa_4options"]
    theirs = worker.last[bs]["results"]
    print(f"agreement with lm-eval (batch {bs}): identical prompts and continuations "
          f"{ctx}/{m}; equal predicted answers {pred}/{m} ({pred / m:.1%}); equal acc and "
          f"acc_norm per question {acc}/{m}; max |per-choice log-likelihood difference| "
          f"{diff:.2e}")
    print(f"accuracy (random weights, meaningless): medjax acc {mine['acc,none']:.4f} acc_norm "
          f"{mine['acc_norm,none']:.4f}; lm-eval acc {theirs['acc,none']:.4f} acc_norm "
          f"{theirs['acc_norm,none']:.4f}")
    print(f"medjax run() said: {lines[0] if lines else ''}")
    print(f"lm-eval CLI equivalent: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {lm_python} -m "
          "lm_eval --model hf --model_args pretrained=<tmp>/model,dtype=float32,"
          f"add_bos_token=True --tasks {TASK} --include_path <tmp>/lm_eval_tasks --batch_size "
          f"{bs} --device cpu --output_path <tmp>/lm_eval_out --log_samples")


if __name__ == "__main__":
    app.run(main)
