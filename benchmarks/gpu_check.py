"""One-shot GPU check: peak matmul, cudnn-vs-xla attention parity and speed, and the MFU
of medjax's real train step (SFT and DPO) for a Llama-3.2-1B-shaped model.

    OUT=/tmp/out bash benchmarks/gpu.sh                      # GPU (one device)
    GPU_CHECK_DRY=1 OUT=/tmp/out python benchmarks/gpu_check.py   # CPU, tiny shapes (--dry)

The driver (no ``--stage``) runs each stage below in its own Python process, under a
per-stage cap and a global deadline (``GPU_CHECK_DEADLINE_S``, default 520 s), streams
their output to stdout and ``$OUT/gpu.log``, and merges the results they report into
``$OUT/gpu.json`` as they arrive (a run cut short keeps what was measured). A stage that
fails prints its traceback and the next stage runs; a train-step stage that runs out of
device memory is re-run with half the batch.

Stages:
  env_peak     nvidia-smi, jax.devices(), versions (jax, jaxlib, flax, ...), cuDNN version;
               bf16 matmul TFLOP/s (n^3 for n in 4096, 8192, 16384 with bf16 output, and
               8192 with f32 output; the median of the 8192 bf16 one is the MFU
               denominator).
  parity       medjax.models.forward (2 layers, hidden 256, 8 q / 2 kv heads, head_dim
               64 and 128, seq 1024, packed segments with restarting positions and a
               padded tail) with attention 'cudnn' vs 'xla' in bf16, with and without a
               Mistral-style sliding window, and an unpacked causal case: max abs diff of
               logits (non-padding tokens) and of the gradients of medjax's lm_loss
               w.r.t. the (f32) params, each also against an f32 XLA reference (matmul
               precision 'highest'), so that |cudnn - f32| can be compared with
               |xla_bf16 - f32| (bf16 noise). A control gives the size of a masking bug
               (the f32 model ignoring the segments).
  attn_time    medjax.models.decoder.attention forward and forward+backward at seq 4096,
               32 q / 8 kv heads, head_dim 64, batch 2, packed segments and unpacked
               causal, 'xla' vs 'cudnn'.
  mfu_*        the train step exactly as ``medjax.train`` builds it
               (``medjax.training.state.setup``: mesh, model, sharded state, jitted
               ``train_step`` with the state donated) from configs/sft.py:llama3_8b and
               configs/dpo.py:llama3_8b (their remat, dtypes, optimizer, loss chunking;
               grad_accum 1, one device), with a Llama-3.2-1B-shaped preset registered at
               run time (hidden 2048, 16 layers, 32 / 8 heads, head_dim 64, ffn 8192,
               vocab 128256, tied embeddings, rope theta 500000 with Llama-3 scaling).
               Synthetic batches: SFT rows packed with several conversations (restarting
               positions, prompt tokens masked), DPO pairs as the preference pipeline lays
               them out ([pairs, 2, seq_len], prompt masked) with the frozen reference
               (``training/reference.py``) computing ``ref_logps`` every step, as the
               training loop does. Step time = median of 5 after 2 warm-up steps; MFU =
               train_flops_per_token (the loop's formula) x tokens/s / peak. Order: SFT xla,
               SFT cudnn, DPO cudnn, DPO xla (the last is the one nearest the memory limit).

Environment knobs: GPU_CHECK_DRY=1 (or --dry): CPU, tiny shapes, cudnn parts "skipped: no
GPU". GPU_CHECK_DEADLINE_S (driver deadline; default 520, dry 240). GPU stages run with
XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 unless set. GPU_CHECK_REMAT overrides the configs' remat
policy; GPU_CHECK_TIE=0 unties the embeddings. Tests of the driver on CPU:
GPU_CHECK_INJECT=stage:oom|error|hang[,...] and GPU_CHECK_FAKE_CUDNN=1 (the 'cudnn' cases
then run attention='xla', so the code that consumes their results runs).

A GPU machine without network access: medjax's own dependencies that its image lacks
(grain 0.2.18 with array_record, cloudpickle and portpicker; ml-collections) travel as
wheels for Python 3.12, downloaded here with
``pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl NAME==VERSION``
(``.whl/`` is ignored by git) and installed there with ``pip install --no-index --no-deps
--target /tmp/site .whl/*.whl`` before ``PYTHONPATH=/tmp/site:$PWD bash benchmarks/gpu.sh``
(benchmarks/RESULTS.md, "GPU").
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # medjax from this tree when run as a script
    sys.path.insert(0, ROOT)

RESULT = "@@RESULT "
OOM_RC = 3
GiB = 2 ** 30

DRY = os.environ.get("GPU_CHECK_DRY", "") not in ("", "0")
DATASHEET_PEAK = 989e12  # H100/H200 dense bf16 (medjax.training.metrics.GPU_PEAK_FLOPS)

# name, cap in seconds on the GPU (the driver also keeps a global deadline).
STAGES = [
    ("env_peak", 60),
    ("parity", 240),  # five cases x three compilations (about 225 s on an H200)
    ("attn_time", 50),
    ("mfu_sft_xla", 100),
    ("mfu_sft_cudnn", 100),
    # cudnn first: DPO with xla attention at 4 pairs x 2 x 4096 is near the memory limit
    # (benchmarks/memory_plan.py: ~121 GiB estimated), and its out-of-memory retry must not
    # cost the cudnn measurement its time.
    ("mfu_dpo_cudnn", 110),
    ("mfu_dpo_xla", 110),
]


# =========================================================================== child side
def emit(**kv):
    """Reports results to the driver (merged into gpu.json under this stage)."""
    print(RESULT + json.dumps(kv, default=_json_default), flush=True)


def _json_default(x):
    try:
        import numpy as np
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except Exception:
        pass
    return str(x)


def log(msg: str):
    print(msg, flush=True)


def is_oom(e: BaseException) -> bool:
    s = f"{type(e).__name__}: {e}"
    return any(k in s for k in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                "OOM when allocating"))


def error_record(e: BaseException) -> dict:
    tb = traceback.format_exc()
    log(tb)
    return {"error": f"{type(e).__name__}: {str(e)[:3000]}", "traceback_tail": tb[-4000:]}


def injected(stage: str, attempt: int) -> str | None:
    """GPU_CHECK_INJECT=stage:kind[,stage:kind]: fake failures to test the driver
    (kinds: oom on the first attempt, error, hang)."""
    for item in os.environ.get("GPU_CHECK_INJECT", "").split(","):
        if ":" in item:
            s, kind = item.split(":", 1)
            if s == stage and (kind != "oom" or attempt == 0):
                return kind
    return None


def on_gpu() -> bool:
    import jax
    return jax.default_backend() == "gpu"


def cudnn_backend() -> str | None:
    """The attention backend the 'cudnn' cases use: 'cudnn' on a GPU; without one None
    (skipped), or 'xla' under GPU_CHECK_FAKE_CUDNN=1 (a dry-run test of the code that
    consumes cudnn results; the numbers are then xla's)."""
    if on_gpu():
        return "cudnn"
    return "xla" if os.environ.get("GPU_CHECK_FAKE_CUDNN", "") not in ("", "0") else None


def median_time(fn, reps: int, inner: int = 1) -> tuple[float, list[float]]:
    """Median seconds per call of ``fn`` (which must block), ``inner`` calls per sample."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times), times


# ---------------------------------------------------------------- stage: env + peak
def stage_env_peak(args):
    import jax
    import jax.numpy as jnp

    info: dict = {"dry": DRY, "python": sys.version.split()[0]}
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi_L"] = (r.stdout + r.stderr).strip()
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,"
                            "clocks.max.sm,power.limit", "--format=csv"],
                           capture_output=True, text=True, timeout=30)
        info["nvidia_smi_query"] = (r.stdout + r.stderr).strip()
    except Exception as e:  # no GPU driver here (dry run)
        info["nvidia_smi_L"] = f"unavailable: {type(e).__name__}: {e}"
    log(f"nvidia-smi -L: {info['nvidia_smi_L']}")
    if "nvidia_smi_query" in info:
        log(info["nvidia_smi_query"])

    versions = {}
    for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "ml_dtypes",
                "grain", "ml_collections", "array_record", "tensorstore", "absl", "medjax"):
        try:
            m = __import__(mod, fromlist=["_"])
            versions[mod] = f"{getattr(m, '__version__', '?')} ({os.path.dirname(m.__file__)})"
        except Exception as e:
            versions[mod] = f"import failed: {type(e).__name__}: {e}"
    try:
        import jaxlib
        versions["jaxlib"] = f"{jaxlib.version.__version__}"
    except Exception:
        pass
    try:
        import importlib.metadata as md
        for dist in ("jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin",
                     "jax-cuda12-pjrt", "nvidia-cudnn-cu13", "nvidia-cudnn-cu12"):
            try:
                versions[dist] = md.version(dist)
            except md.PackageNotFoundError:
                pass
    except Exception:
        pass
    info["versions"] = versions
    for k, v in versions.items():
        log(f"  {k}: {v}")

    devs = jax.devices()
    info["backend"] = jax.default_backend()
    info["devices"] = [f"{d} kind={d.device_kind!r}" for d in devs]
    log(f"jax.devices(): {info['devices']} (backend {info['backend']})")
    try:
        from jax._src.lib import cuda_versions
        if cuda_versions is not None:
            info["cudnn_version"] = cuda_versions.cudnn_get_version()
            for name in ("cuda_runtime_get_version", "cuda_driver_get_version",
                         "cublas_get_version", "cufft_get_version"):
                f = getattr(cuda_versions, name, None)
                if f is not None:
                    try:
                        info[name.replace("_get_version", "")] = f()
                    except Exception as e:
                        info[name.replace("_get_version", "")] = f"error: {e}"
        else:
            info["cudnn_version"] = "n/a (no CUDA plugin)"
    except Exception as e:
        info["cudnn_version"] = f"unavailable: {type(e).__name__}: {e}"
    log(f"cuDNN version: {info['cudnn_version']}")
    try:
        ms = devs[0].memory_stats()
        info["memory_stats"] = ms and {k: ms[k] for k in ("bytes_limit", "bytes_in_use",
                                                          "peak_bytes_in_use") if k in ms}
    except Exception as e:
        info["memory_stats"] = f"unavailable: {e}"
    info["env"] = {k: os.environ.get(k) for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                                                   "XLA_PYTHON_CLIENT_PREALLOCATE",
                                                   "JAX_PLATFORMS", "PYTHONPATH")}
    try:
        info["jax_environment"] = jax.print_environment_info(return_string=True)
        log(info["jax_environment"])
    except Exception as e:
        info["jax_environment"] = f"unavailable: {e}"
    emit(**info)

    # ---- peak bf16 matmul
    sizes = [256, 512] if DRY else [4096, 8192, 16384]
    main_n = 512 if DRY else 8192
    peaks = {}
    for n in sizes:
        outs = [("bf16", jnp.bfloat16)] + ([("f32", jnp.float32)] if n == main_n else [])
        for out_name, out_dt in outs:
            key = f"{n}_{out_name}_out"
            try:
                ka, kb = jax.random.split(jax.random.key(n))
                a = jax.random.normal(ka, (n, n), jnp.bfloat16)
                b = jax.random.normal(kb, (n, n), jnp.bfloat16)
                f = jax.jit(lambda x, y, dt=out_dt: jnp.dot(x, y, preferred_element_type=dt))
                for _ in range(3):
                    f(a, b).block_until_ready()
                inner = 10 if not DRY else 2

                def run():
                    r = None
                    for _ in range(inner):
                        r = f(a, b)
                    r.block_until_ready()

                med, times = median_time(run, 10 if not DRY else 3)
                med /= inner
                flops = 2 * n ** 3 / med
                peaks[key] = {"tflops_median": flops / 1e12,
                              "tflops_best": 2 * n ** 3 / (min(times) / inner) / 1e12,
                              "ms_median": med * 1e3}
                log(f"matmul {n}^3 bf16 in, {out_name} out: {flops / 1e12:8.1f} TFLOP/s "
                    f"(median of {len(times)} x {inner} calls, {med * 1e3:.3f} ms)")
                a = b = None  # free before the next size
            except Exception as e:
                peaks[key] = error_record(e)
            emit(matmul={key: peaks[key]})
    main = peaks.get(f"{main_n}_bf16_out", {})
    if "tflops_median" in main:
        best = max(v["tflops_median"] for v in peaks.values() if "tflops_median" in v)
        emit(peak_flops=main["tflops_median"] * 1e12, peak_source=f"{main_n}^3 bf16 median",
             peak_flops_best_measured=best * 1e12,
             peak_vs_datasheet=main["tflops_median"] * 1e12 / DATASHEET_PEAK)
        log(f"PEAK (MFU denominator): {main['tflops_median']:.1f} TFLOP/s "
            f"({main_n}^3 bf16); best measured {best:.1f}; datasheet "
            f"{DATASHEET_PEAK / 1e12:.0f}")


# ---------------------------------------------------------------- synthetic batches
def packed_rows(rows: int, t: int, vocab: int, seed: int, min_len: int, max_len: int,
                pad_tail: int = 0, prompt_frac=(0.1, 0.5)) -> dict:
    """Rows packed with several documents: segment ids 1, 2, ..., positions restarting at
    0, loss_mask 0 on each document's prompt part; the last row ends with ``pad_tail``
    padding tokens (segment 0)."""
    import numpy as np
    rs = np.random.RandomState(seed)
    out = {"input_ids": rs.randint(0, vocab, (rows, t)).astype(np.int32),
           "segment_ids": np.zeros((rows, t), np.int32),
           "positions": np.zeros((rows, t), np.int32),
           "loss_mask": np.zeros((rows, t), np.int32)}
    for r in range(rows):
        end = t - (pad_tail if r == rows - 1 else 0)
        s, k = 0, 1
        while s < end:
            n = min(int(rs.randint(min_len, max_len + 1)), end - s)
            out["segment_ids"][r, s:s + n] = k
            out["positions"][r, s:s + n] = np.arange(n)
            p = int(n * rs.uniform(*prompt_frac))
            out["loss_mask"][r, s + p:s + n] = 1
            s += n
            k += 1
        if end < t:
            out["input_ids"][r, end:] = 0
    return out


def preference_rows(pairs: int, t: int, vocab: int, seed: int, prompt_len: int) -> dict:
    """[pairs, 2, t] as the preference pipeline lays them out (pipeline.Tokenize._pair):
    prompt + response in segment 1, loss_mask on the response; here the responses fill
    the row (no padding), chosen and rejected share the prompt."""
    import numpy as np
    rs = np.random.RandomState(seed)
    ids = rs.randint(0, vocab, (pairs, 2, t)).astype(np.int32)
    ids[:, 1, :prompt_len] = ids[:, 0, :prompt_len]
    mask = np.zeros((pairs, 2, t), np.int32)
    mask[:, :, prompt_len:] = 1
    return {"input_ids": ids, "segment_ids": np.ones((pairs, 2, t), np.int32),
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (pairs, 2, t)).copy(),
            "loss_mask": mask}


# ---------------------------------------------------------------- stage: parity
def _flat(tree):
    import jax
    import numpy as np
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _diff(a, b) -> dict:
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.abs(a - b)
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "rel_l2": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)),
            "ref_max_abs": float(np.abs(b).max())}


def stage_parity(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from medjax.models import ModelConfig, forward, init_params
    from medjax.objectives import lm_loss

    gpu = on_gpu()
    cudnn = cudnn_backend()
    t, b = (128, 2) if DRY else (1024, 2)
    hidden, ffn, vocab = (64, 128, 256) if DRY else (256, 512, 2048)
    heads, kv = 8, 2
    window = t // 4  # well below t: several window lengths per row
    cases = [  # name, head_dim, sliding window, packed
        ("packed_hd64", 64, None, True),
        ("packed_hd64_window", 64, window, True),
        ("unpacked_causal_hd64", 64, None, False),
        ("packed_hd128", 128, None, True),
        ("packed_hd128_window", 128, window, True),
    ]
    if DRY:  # the two code paths (segments + window + control; no segments), CPU-sized
        cases = [(n, hd // 4, w, p) for n, hd, w, p in cases[1:3]]
    batch_np = packed_rows(b, t, vocab, seed=1, min_len=t // 16, max_len=t // 2,
                           pad_tail=t // 16)
    nseg = [int(batch_np["segment_ids"][r].max()) for r in range(b)]
    emit(setup={"seq_len": t, "batch": b, "hidden": hidden, "ffn": ffn, "vocab": vocab,
                "heads": heads, "kv_heads": kv, "layers": 2, "window": window,
                "segments_per_row": nseg, "pad_tail_last_row": t // 16,
                "params": "float32, kernels scaled x3 (q/k x6) for peaky attention",
                "compute": "bfloat16 (f32 reference: float32, matmul precision highest)"})
    log(f"parity: seq {t}, batch {b}, segments per row {nseg}, window {window}, "
        f"{'GPU' if gpu else 'CPU (cudnn skipped: no GPU)'}")

    for name, hd, win, packed in cases:
        t0 = time.perf_counter()
        rec: dict = {"head_dim": hd, "sliding_window": win, "packed": packed}
        try:
            base = ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                               num_layers=2, num_heads=heads, num_kv_heads=kv, head_dim=hd,
                               rope_theta=10000.0 if win else 500000.0, sliding_window=win,
                               family="mistral" if win else "llama",
                               max_position_embeddings=max(t, 2048),
                               param_dtype="float32", dtype="bfloat16", attention="xla")
            params = init_params(base, jax.random.key(0))

            def scale(path, x):  # O(1) activations and peaky attention: masking errors show
                names = [getattr(k, "key", "") for k in path]
                if "scale" in names:
                    return x
                f = 3.0 * (2.0 if ("q_proj" in names or "k_proj" in names) else 1.0)
                return x * f
            params = jax.tree_util.tree_map_with_path(scale, params)
            batch = {k: jnp.asarray(v) for k, v in batch_np.items()}
            if not packed:
                batch = {"input_ids": batch["input_ids"]}
            real = np.asarray(batch_np["segment_ids"] != 0) if packed else np.ones((b, t), bool)

            def make(cfg):
                def f(p, bt):
                    loss, grads = jax.value_and_grad(
                        lambda q: lm_loss(cfg, q, bt, chunk_size=t)[0])(p)
                    logits = forward(cfg, p, bt["input_ids"], segment_ids=bt.get("segment_ids"),
                                     positions=bt.get("positions"))
                    return loss, grads, logits
                return jax.jit(f)

            impls = [("f32_xla", base.replace(dtype="float32")), ("bf16_xla", base),
                     ("bf16_cudnn", base.replace(attention=cudnn or "cudnn"))]
            out = {}
            for iname, cfg in impls:
                if iname == "bf16_cudnn" and cudnn is None:
                    rec[iname] = "skipped: no GPU"
                    log(f"  {name}: {iname} skipped: no GPU")
                    continue
                try:
                    ti = time.perf_counter()
                    if iname == "f32_xla":
                        with jax.default_matmul_precision("highest"):
                            loss, grads, logits = make(cfg)(params, batch)
                    else:
                        loss, grads, logits = make(cfg)(params, batch)
                    jax.block_until_ready(logits)
                    out[iname] = (float(loss), _flat(grads), np.asarray(logits)[real])
                    rec[iname] = {"loss": float(loss), "compile_and_run_s":
                                  time.perf_counter() - ti}
                except Exception as e:
                    rec[iname] = error_record(e)
                    log(f"  {name}: {iname} FAILED: {rec[iname]['error'][:500]}")
            if packed and "f32_xla" in out:  # control: the size of a masking bug
                with jax.default_matmul_precision("highest"):
                    wrong = jax.jit(lambda p, ids: forward(base.replace(dtype="float32"), p, ids))(
                        params, batch["input_ids"])
                rec["control_f32_ignoring_segments_vs_f32"] = _diff(
                    np.asarray(wrong)[real], out["f32_xla"][2])
            pairs = [("bf16_cudnn", "bf16_xla"), ("bf16_cudnn", "f32_xla"),
                     ("bf16_xla", "f32_xla")]
            for a, r in pairs:
                if a in out and r in out:
                    rec[f"{a}_vs_{r}"] = {"logits": _diff(out[a][2], out[r][2]),
                                          "grads": _diff(out[a][1], out[r][1]),
                                          "loss_abs_diff": abs(out[a][0] - out[r][0])}
            if "bf16_cudnn" in out and "bf16_xla" in out and "f32_xla" in out:
                verdict = {}
                for what in ("logits", "grads"):
                    c = rec["bf16_cudnn_vs_f32_xla"][what]
                    x = rec["bf16_xla_vs_f32_xla"][what]
                    ratio = {m: c[m] / max(x[m], 1e-30) for m in ("max_abs", "rel_l2")}
                    ok = ratio["max_abs"] <= 2.0 and ratio["rel_l2"] <= 2.0
                    verdict[what] = {"cudnn_err_over_xla_bf16_err": ratio,
                                     "within_bf16_noise": bool(ok)}
                rec["verdict"] = verdict
            rec["wall_s"] = time.perf_counter() - t0
        except Exception as e:
            rec.update(error_record(e))
        emit(cases={name: rec})
        _print_parity(name, rec)


def _print_parity(name, rec):
    log(f"  == {name} (head_dim {rec.get('head_dim')}, window {rec.get('sliding_window')}, "
        f"packed {rec.get('packed')}), {rec.get('wall_s', float('nan')):.1f} s")
    if "error" in rec:
        log(f"     ERROR {rec['error'][:300]}")
    for k in ("bf16_cudnn_vs_bf16_xla", "bf16_cudnn_vs_f32_xla", "bf16_xla_vs_f32_xla",
              "control_f32_ignoring_segments_vs_f32"):
        v = rec.get(k)
        if not v:
            continue
        if "logits" in v:
            lg, gr = v["logits"], v["grads"]
            log(f"     {k:36s} logits max {lg['max_abs']:.3e} rel {lg['rel_l2']:.2e} | "
                f"grads max {gr['max_abs']:.3e} rel {gr['rel_l2']:.2e} | "
                f"loss diff {v['loss_abs_diff']:.2e}")
        else:
            log(f"     {k:36s} logits max {v['max_abs']:.3e} rel {v['rel_l2']:.2e}")
    if "verdict" in rec:
        for what, v in rec["verdict"].items():
            r = v["cudnn_err_over_xla_bf16_err"]
            log(f"     verdict {what}: |cudnn-f32| / |xla_bf16-f32| = max {r['max_abs']:.2f}, "
                f"rel_l2 {r['rel_l2']:.2f} -> "
                f"{'within bf16 noise' if v['within_bf16_noise'] else 'NOT within bf16 noise'}")
    for k in ("bf16_cudnn", "bf16_xla", "f32_xla"):
        v = rec.get(k)
        if isinstance(v, str):
            log(f"     {k}: {v}")
        elif isinstance(v, dict) and "error" in v:
            log(f"     {k}: ERROR {v['error'][:300]}")


# ---------------------------------------------------------------- stage: attention timing
def _attention_fns(cfg, packed: bool):
    """Jitted forward and forward+backward (grads w.r.t. q, k, v of <out, g>) of medjax's
    attention; every array is an argument (no large constants in the program)."""
    import jax
    import jax.numpy as jnp

    from medjax.models.decoder import attention

    def fwd(q, k, v, g, seg=None):
        del g
        return attention(cfg, q, k, v, seg if packed else None)

    def loss(q, k, v, g, seg=None):
        o = fwd(q, k, v, g, seg)
        return jnp.sum(o.astype(jnp.float32) * g.astype(jnp.float32))

    return jax.jit(fwd), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def stage_attn_time(args):
    import jax
    import jax.numpy as jnp

    from medjax.models import ModelConfig

    cudnn = cudnn_backend()
    b, t, n, k, h = (1, 256, 4, 2, 16) if DRY else (2, 4096, 32, 8, 64)
    seg_np = packed_rows(b, t, 100, seed=2, min_len=t // 16, max_len=t // 2)["segment_ids"]
    emit(setup={"batch": b, "seq_len": t, "heads": n, "kv_heads": k, "head_dim": h,
                "dtype": "bfloat16", "segments_per_row": [int(s.max()) for s in seg_np],
                "flops_convention": "causal: fwd 2*b*n*t^2*h (half of 4*b*n*t^2*h), "
                                    "fwd+bwd 3.5x fwd"})
    kq, kk, kv_, kg = jax.random.split(jax.random.key(3), 4)
    q = jax.random.normal(kq, (b, t, n, h), jnp.bfloat16)
    kk_ = jax.random.normal(kk, (b, t, k, h), jnp.bfloat16)
    v = jax.random.normal(kv_, (b, t, k, h), jnp.bfloat16)
    g = jax.random.normal(kg, (b, t, n, h), jnp.bfloat16)
    seg = jnp.asarray(seg_np)
    fwd_flops = 2 * b * n * t * t * h
    for impl in ("xla", "cudnn"):
        for case, s in (("packed", seg), ("unpacked_causal", None)):
            key = f"{impl}_{case}"
            if impl == "cudnn" and cudnn is None:
                emit(cases={key: "skipped: no GPU"})
                log(f"  {key}: skipped: no GPU")
                continue
            rec = {}
            try:
                cfg = ModelConfig(vocab_size=128, hidden_size=n * h, intermediate_size=128,
                                  num_layers=1, num_heads=n, num_kv_heads=k, head_dim=h,
                                  dtype="bfloat16",
                                  attention=cudnn if impl == "cudnn" else impl)
                fwd_fn, fb_fn = _attention_fns(cfg, s is not None)
                args_ = (q, kk_, v, g) + ((s,) if s is not None else ())
                fwd = functools.partial(fwd_fn, *args_)
                fb = functools.partial(fb_fn, *args_)
                t0 = time.perf_counter()
                jax.block_until_ready(fwd())
                jax.block_until_ready(fb())
                rec["compile_s"] = time.perf_counter() - t0
                for _ in range(2):
                    jax.block_until_ready(fb())
                reps = 3 if DRY else 10
                mf, _ = median_time(lambda: jax.block_until_ready(fwd()), reps)
                mb, _ = median_time(lambda: jax.block_until_ready(fb()), reps)
                rec.update(fwd_ms=mf * 1e3, fwd_bwd_ms=mb * 1e3,
                           fwd_tflops=fwd_flops / mf / 1e12,
                           fwd_bwd_tflops=3.5 * fwd_flops / mb / 1e12)
                log(f"  {key:24s} fwd {mf * 1e3:8.2f} ms ({rec['fwd_tflops']:6.1f} TFLOP/s)  "
                    f"fwd+bwd {mb * 1e3:8.2f} ms ({rec['fwd_bwd_tflops']:6.1f} TFLOP/s)  "
                    f"compile {rec['compile_s']:.1f} s")
            except Exception as e:
                rec.update(error_record(e))
                log(f"  {key}: FAILED {rec['error'][:500]}")
            emit(cases={key: rec})


# ---------------------------------------------------------------- stage: MFU
def bench_preset() -> dict:
    from medjax.models import RopeScaling
    tie = os.environ.get("GPU_CHECK_TIE", "0" if DRY else "1") != "0"
    if DRY:
        # Untied: XLA's CPU backend (jax 0.10.2) fails to run the bf16 train step with tied
        # embeddings ("Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32").
        return dict(family="llama", vocab_size=1024, hidden_size=128, intermediate_size=256,
                    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32,
                    rope_theta=500000.0, tie_embeddings=tie, max_position_embeddings=4096,
                    bos_token_id=1, eos_token_id=(2,))
    # Llama-3.2-1B (config.json): tied embeddings, rope llama3 scaling factor 32.
    return dict(family="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5,
                rope_theta=500000.0, tie_embeddings=tie, max_position_embeddings=131072,
                rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
                bos_token_id=128000, eos_token_id=(128001,))


def load_config(name: str, variant: str):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}",
                                                  os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(variant)


def stage_mfu(args, objective: str, impl: str):
    import jax

    if impl == "cudnn" and cudnn_backend() is None:
        emit(skipped="skipped: no GPU")
        log(f"mfu {objective} {impl}: skipped: no GPU")
        return
    from medjax.models import presets
    import_note = None
    try:
        from medjax.training.state import setup
    except ImportError as e:
        # The data pipeline (Grain) is only used by loop.run(), not by setup(); keep the
        # measurement alive if a shipped wheel does not import on this machine.
        import_note = f"medjax.training.state did not import ({type(e).__name__}: {e}); " \
                      "measured with a stub medjax.data.pipeline (run() is not used here)"
        log(traceback.format_exc())
        log("WARNING: " + import_note)
        import types
        stub = types.ModuleType("medjax.data.pipeline")

        def pipeline_from_config(*a, **k):
            raise RuntimeError("stub medjax.data.pipeline (gpu_check import fallback)")
        stub.pipeline_from_config = pipeline_from_config
        sys.modules["medjax.data.pipeline"] = stub
        from medjax.training.state import setup
    from medjax.training.metrics import device_peak_flops, train_flops_per_token
    from medjax.training.reference import frozen_copy

    presets.PRESETS["bench_llama32_1b"] = bench_preset()
    t = 256 if DRY else 4096
    default_rows = (4 if DRY else 8) if objective == "sft" else (2 if DRY else 4)
    rows = args.batch or default_rows
    config = load_config(objective, "llama3_8b")  # the GPU variant's settings
    config.model.preset = "bench_llama32_1b"
    config.model.vocab_size = 0
    config.model.attention = cudnn_backend() if impl == "cudnn" else impl
    config.seq_len = t
    config.batch_size = rows
    config.optimizer.grad_accum = 1
    config.steps = 1000
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
    if objective == "dpo":
        config.objective.reference = "frozen"
        config.objective.loss_type = "sigmoid"
    if os.environ.get("GPU_CHECK_REMAT"):
        config.model.remat_policy = os.environ["GPU_CHECK_REMAT"]
    vocab = bench_preset()["vocab_size"]
    rec = {"objective": objective, "attention": impl, "seq_len": t, "batch_size": rows,
           "default_batch_size": default_rows,
           "config": f"configs/{objective}.py:llama3_8b + overrides (preset "
                     "bench_llama32_1b, seq_len, batch_size, grad_accum 1, one device"
                     + (", reference frozen" if objective == "dpo" else "") + ")",
           "remat_policy": config.model.remat_policy, "param_dtype": config.model.param_dtype,
           "dtype": config.model.dtype, "scan_layers": config.model.scan_layers,
           "loss_chunk_size": config.objective.loss_chunk_size,
           "optimizer": f"adamw, clip_norm {config.optimizer.clip_norm}"}
    if rows != default_rows:
        rec["note"] = f"batch reduced from {default_rows} to {rows} after out-of-memory"
    if import_note:
        rec["import_note"] = import_note
    if impl == "cudnn" and not on_gpu():
        rec["fake_cudnn"] = "GPU_CHECK_FAKE_CUDNN: this 'cudnn' run used attention='xla'"
    log(f"mfu {objective} attention={impl}: batch {rows} x seq {t}, remat "
        f"{config.model.remat_policy}, params {config.model.param_dtype}, compute "
        f"{config.model.dtype}")
    if injected(args.stage, args.attempt) == "oom":
        raise RuntimeError("RESOURCE_EXHAUSTED: injected fake out-of-memory (GPU_CHECK_INJECT)")

    t0 = time.perf_counter()
    s = setup(config, vocab)
    mc = s.model_config
    rec.update(setup_s=time.perf_counter() - t0, num_params=mc.num_params,
               tie_embeddings=mc.tie_embeddings, model=f"{mc.num_layers} layers, hidden "
               f"{mc.hidden_size}, heads {mc.num_heads}/{mc.num_kv_heads}, head_dim "
               f"{mc.head_dim}, ffn {mc.intermediate_size}, vocab {mc.vocab_size}")
    log(f"  setup (init + optimizer state) {rec['setup_s']:.1f} s; {mc.num_params / 1e9:.3f}B "
        f"params ({'tied' if mc.tie_embeddings else 'untied'} embeddings)")
    emit(**rec)

    if objective == "sft":
        local = packed_rows(rows, t, mc.vocab_size, seed=5, min_len=t // 16, max_len=t // 2)
        rec["segments_per_row"] = [int(x.max()) for x in local["segment_ids"]]
    else:
        local = preference_rows(rows, t, mc.vocab_size, seed=5, prompt_len=min(512, t // 8))
        rec["prompt_len"] = min(512, t // 8)
    tokens = int(local["input_ids"].size)
    rec["tokens_per_step"] = tokens
    state = s.state
    with jax.set_mesh(s.mesh):
        plain = {k: jax.device_put(v, s.batch_sharding) for k, v in local.items()}
        batch = plain
        reference = None
        if objective == "dpo":  # as loop.device_batch does with a frozen reference
            t0 = time.perf_counter()
            reference = frozen_copy(mc, state["params"], config.objective.loss_chunk_size)
            ref = jax.block_until_ready(reference.fn(reference.params, plain))
            rec["reference_copy_compile_first_s"] = time.perf_counter() - t0
            batch = dict(plain, ref_logps=ref)
        t0 = time.perf_counter()
        compiled = s.step_fn.lower(state, batch).compile()
        rec["compile_s"] = time.perf_counter() - t0
        log(f"  train step compiled in {rec['compile_s']:.1f} s")
        try:
            m = compiled.memory_analysis()
            rec["compiled_memory_gib"] = {
                "argument": m.argument_size_in_bytes / GiB, "output": m.output_size_in_bytes / GiB,
                "alias": m.alias_size_in_bytes / GiB, "temp": m.temp_size_in_bytes / GiB}
        except Exception as e:
            rec["compiled_memory_gib"] = f"unavailable: {e}"
        emit(**rec)

        def one_step(state):
            b = batch
            if reference is not None:
                b = dict(plain, ref_logps=reference.fn(reference.params, plain))
            state, metrics = compiled(state, b)
            jax.block_until_ready(metrics)
            return state, metrics

        warm, timed = (1, 2) if DRY else (2, 5)
        losses = []
        t0 = time.perf_counter()
        for _ in range(warm):
            state, metrics = one_step(state)
            losses.append(float(metrics["loss"]))
        rec["warmup_s"] = time.perf_counter() - t0
        times = []
        for _ in range(timed):
            t0 = time.perf_counter()
            state, metrics = one_step(state)
            times.append(time.perf_counter() - t0)
            losses.append(float(metrics["loss"]))
        step = statistics.median(times)
        if reference is not None:
            rf, _ = median_time(lambda: jax.block_until_ready(reference.fn(reference.params, plain)),
                                2 if DRY else 3)
            rec["reference_forward_s_median"] = rf
            rec["train_step_only_s"] = step - rf
    fpt = train_flops_per_token(mc, t)
    peak = float(os.environ.get("GPU_CHECK_PEAK_FLOPS") or 0) or None
    datasheet = device_peak_flops()
    achieved = fpt * tokens / step
    rec.update(step_times_s=times, step_time_s_median=step, tokens_per_s=tokens / step,
               train_flops_per_token=fpt, achieved_tflops=achieved / 1e12,
               losses=losses, measured_peak_tflops=peak and peak / 1e12,
               mfu_vs_measured_peak=peak and achieved / peak,
               mfu_vs_datasheet=datasheet and achieved / datasheet,
               datasheet_peak_tflops=datasheet and datasheet / 1e12)
    if objective == "dpo":
        # + the frozen reference's forward: 2 x matmul params + causal attention forward.
        n_mm = mc.num_params - mc.vocab_size * mc.hidden_size * (0 if mc.tie_embeddings else 1)
        fwd = 2 * n_mm + 2 * mc.num_layers * mc.num_heads * mc.head_dim * t
        rec["mfu_incl_reference_vs_measured_peak"] = peak and (fpt + fwd) * tokens / step / peak
        rec["note_flops"] = ("MFU uses the loop's train_flops_per_token over all tokens; the "
                             "reference forward (2N + attention per token) is not in it "
                             "(see mfu_incl_reference_*); on one device the loss skips LM-head "
                             "chunks with no response token, which the formula still counts")
    try:
        ms = jax.devices()[0].memory_stats() or {}
        rec["peak_bytes_in_use"] = ms.get("peak_bytes_in_use")
        rec["bytes_limit"] = ms.get("bytes_limit")
        rec["peak_gib"] = ms.get("peak_bytes_in_use", 0) / GiB if ms else None
    except Exception as e:
        rec["peak_bytes_in_use"] = f"unavailable: {e}"
    emit(**rec)
    log(f"  step {step:.3f} s (median of {timed}: {', '.join(f'{x:.3f}' for x in times)}), "
        f"{tokens / step:,.0f} tokens/s, {achieved / 1e12:.1f} TFLOP/s model, "
        f"MFU {_pct(rec['mfu_vs_measured_peak'])} of measured peak, "
        f"{_pct(rec['mfu_vs_datasheet'])} of datasheet; peak memory "
        f"{_gib(rec.get('peak_bytes_in_use'))} GiB; losses {[round(x, 4) for x in losses]}")


def _pct(x):
    return f"{x:.1%}" if isinstance(x, (int, float)) else "n/a"


def _gib(x):
    return f"{x / GiB:.1f}" if isinstance(x, (int, float)) else "n/a"


def child_main(args):
    stage = args.stage
    kind = injected(stage, args.attempt)
    if kind == "error":
        raise RuntimeError(f"injected error in stage {stage} (GPU_CHECK_INJECT)")
    if kind == "hang":
        log(f"injected hang in stage {stage}")
        time.sleep(10 ** 6)
    fn = {"env_peak": stage_env_peak, "parity": stage_parity, "attn_time": stage_attn_time}
    if stage in fn:
        fn[stage](args)
    elif stage.startswith("mfu_"):
        _, objective, impl = stage.split("_")
        stage_mfu(args, objective, impl)
    else:
        raise SystemExit(f"unknown stage {stage!r}")


# =========================================================================== driver side
class Driver:
    def __init__(self, out_dir: str, deadline_s: float):
        self.out = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.t0 = time.time()
        self.deadline = self.t0 + deadline_s
        self.log_f = open(os.path.join(out_dir, "gpu.log"), "a", buffering=1)
        self.results = {"meta": {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime(self.t0)),
                                 "dry": DRY, "deadline_s": deadline_s, "root": ROOT,
                                 "argv": sys.argv},
                        "stages": {}}
        self.save()

    def kill_current(self):
        p = getattr(self, "current", None)
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def on_signal(self, signum, frame):
        """SIGTERM/SIGINT: stop the running stage, write the summary, exit."""
        self.kill_current()
        self.say(f"#### driver: signal {signum} received; stopping")
        name = getattr(self, "current_name", None)
        if name and not self.results["stages"].get(name, {}).get("status"):
            self.results["stages"][name]["status"] = f"interrupted (signal {signum})"
        self.results["meta"]["interrupted"] = f"signal {signum}"
        try:
            self.summary()
        finally:
            os._exit(128 + signum)

    def say(self, line: str):
        print(line, flush=True)
        self.log_f.write(line + "\n")

    def save(self):
        path = os.path.join(self.out, "gpu.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, default=_json_default)
        os.replace(tmp, path)

    @staticmethod
    def merge(dst: dict, src: dict):
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                Driver.merge(dst[k], v)
            else:
                dst[k] = v

    def run_stage(self, name: str, cap: float, extra_args=(), env_extra=None,
                  attempt: int = 0) -> tuple[int | None, dict]:
        remaining = self.deadline - time.time()
        rec = self.results["stages"].setdefault(name, {})
        min_start = 15 if DRY else (45 if name.startswith("mfu_") else 25)
        if remaining < min_start:
            rec["status"] = f"skipped: {remaining:.0f} s left before the deadline"
            self.say(f"#### {name}: {rec['status']}")
            self.save()
            return None, rec
        limit = min(cap, remaining)
        self.say(f"#### stage {name} (attempt {attempt + 1}, limit {limit:.0f} s, "
                 f"{time.time() - self.t0:.0f} s elapsed)")
        cmd = [sys.executable, "-u", os.path.abspath(__file__), "--stage", name,
               "--attempt", str(attempt), *extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
        if DRY:
            env["JAX_PLATFORMS"] = "cpu"
        start = time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env, start_new_session=True, bufsize=1)
        self.current, self.current_name = p, name
        lines: queue.Queue = queue.Queue()

        def reader():
            for line in p.stdout:
                lines.put(line)
            lines.put(None)
        threading.Thread(target=reader, daemon=True).start()
        timed_out = False
        while True:
            try:
                line = lines.get(timeout=max(0.1, start + limit - time.time()))
            except queue.Empty:
                timed_out = True
                break
            if line is None:
                break
            line = line.rstrip("\n")
            if line.startswith(RESULT):
                try:
                    self.merge(rec, json.loads(line[len(RESULT):]))
                    self.save()
                except Exception as e:
                    self.say(f"[driver] bad result line ({e}): {line[:300]}")
                continue
            self.say(f"[{name}] {line}")
            if time.time() > start + limit:
                timed_out = True
                break
        if timed_out:
            self.kill_current()
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        self.current = None
        wall = time.time() - start
        rec["wall_s"] = round(wall, 1)
        if timed_out:
            rec["status"] = f"timeout: killed after {wall:.0f} s (limit {limit:.0f} s)"
            rc = None
        elif rc == 0:
            rec["status"] = "ok"
        elif rc == OOM_RC:
            rec["status"] = "out of memory"
        else:
            rec["status"] = f"failed: exit code {rc} (traceback in gpu.log)"
        self.say(f"#### {name}: {rec['status']} ({wall:.1f} s)")
        self.save()
        return rc, rec

    def summary(self):
        st = self.results["stages"]
        lines = ["", "=" * 78, "SUMMARY" + (" (DRY RUN, CPU, tiny shapes)" if DRY else ""),
                 "=" * 78]
        e = st.get("env_peak", {})
        lines.append(f"devices: {e.get('devices')}  cuDNN {e.get('cudnn_version')}")
        v = e.get("versions", {})
        lines.append(f"jax {v.get('jax', '?').split()[0]}, jaxlib {v.get('jaxlib', '?')}, "
                     f"flax {v.get('flax', '?').split()[0]}")
        if e.get("peak_flops"):
            lines.append(f"peak bf16 matmul ({e.get('peak_source')}): "
                         f"{e['peak_flops'] / 1e12:.1f} TFLOP/s (best measured "
                         f"{e.get('peak_flops_best_measured', 0) / 1e12:.1f}; "
                         f"{e.get('peak_vs_datasheet', 0):.1%} of 989 datasheet)")
        par = st.get("parity", {}).get("cases", {})
        if par:
            lines.append("parity (cudnn vs xla, bf16; errors vs f32 XLA reference):")
            lines.append(f"  {'case':22s} {'logits |c-x|':>12s} {'|c-f32|':>10s} "
                         f"{'|x-f32|':>10s} {'grads |c-x|':>12s} {'|c-f32|':>10s} "
                         f"{'|x-f32|':>10s}  verdict")
        for name, r in par.items():
            if not isinstance(r, dict):
                continue
            cx, cf, xf = (r.get(k, {}) for k in ("bf16_cudnn_vs_bf16_xla",
                                                 "bf16_cudnn_vs_f32_xla",
                                                 "bf16_xla_vs_f32_xla"))

            def g(d, w):
                return f"{d[w]['max_abs']:.2e}" if d and w in d else "-"
            verdict = "; ".join(f"{w}: {'ok' if x['within_bf16_noise'] else 'NOT ok'}"
                                for w, x in r.get("verdict", {}).items())
            if not verdict:
                c = r.get("bf16_cudnn")
                verdict = (c if isinstance(c, str) else
                           (c or {}).get("error", r.get("error", "n/a"))[:100])
            lines.append(f"  {name:22s} {g(cx, 'logits'):>12s} {g(cf, 'logits'):>10s} "
                         f"{g(xf, 'logits'):>10s} {g(cx, 'grads'):>12s} {g(cf, 'grads'):>10s} "
                         f"{g(xf, 'grads'):>10s}  {verdict}")
        at = st.get("attn_time", {}).get("cases", {})
        if at:
            lines.append("attention timing (ms, fwd / fwd+bwd):")
            for k, r in at.items():
                if isinstance(r, dict) and "fwd_ms" in r:
                    lines.append(f"  {k:24s} {r['fwd_ms']:8.2f} / {r['fwd_bwd_ms']:8.2f}  "
                                 f"({r['fwd_bwd_tflops']:.0f} TFLOP/s fwd+bwd)")
                else:
                    msg = r if isinstance(r, str) else r.get("error", "")[:120]
                    lines.append(f"  {k:24s} {msg}")
        lines.append("train step (real medjax step, Llama-3.2-1B shape; embeddings "
                     + ("tied" if st.get("mfu_sft_xla", {}).get("tie_embeddings", True)
                        else "untied") + "):")
        lines.append(f"  {'stage':15s} {'batch':>5s} {'step s':>7s} {'tok/s':>9s} {'TFLOP/s':>8s}"
                     f" {'MFU meas':>8s} {'MFU 989':>8s} {'peak GiB':>8s}  status")
        for name in [n for n, _ in STAGES if n.startswith("mfu_")]:
            r = st.get(name, {})
            if "step_time_s_median" in r:
                lines.append(f"  {name:15s} {r['batch_size']:>5d} {r['step_time_s_median']:7.3f} "
                             f"{r['tokens_per_s']:9,.0f} {r['achieved_tflops']:8.1f} "
                             f"{_pct(r.get('mfu_vs_measured_peak')):>8s} "
                             f"{_pct(r.get('mfu_vs_datasheet')):>8s} "
                             f"{_gib(r.get('peak_bytes_in_use')):>8s}  {r.get('status', '')}"
                             + (f" ({r['note']})" if r.get("note") else "")
                             + (" (untied retry)" if r.get("tied_attempt") else "")
                             + (" (stub data pipeline)" if r.get("import_note") else ""))
            else:
                lines.append(f"  {name:15s} {r.get('skipped') or r.get('status', 'not run')}")
        bad = [f"  {n}: {r.get('status')}" for n, r in st.items() if r.get("status") != "ok"]
        if bad:
            lines.append("stages not ok (tracebacks in gpu.log):")
            lines.extend(bad)
        lines.append(f"total wall time {time.time() - self.t0:.0f} s")
        for line in lines:
            self.say(line)
        self.results["summary"] = lines
        self.results["meta"]["total_s"] = round(time.time() - self.t0, 1)
        self.save()


def driver_main(args):
    out = os.environ.get("OUT") or "/tmp/gpu_check_out"
    deadline = float(os.environ.get("GPU_CHECK_DEADLINE_S") or (240 if DRY else 520))
    d = Driver(out, deadline)
    signal.signal(signal.SIGTERM, d.on_signal)
    signal.signal(signal.SIGINT, d.on_signal)
    d.say(f"gpu_check: {'DRY RUN (CPU, tiny shapes)' if DRY else 'GPU run'}; OUT={out}; "
          f"deadline {deadline:.0f} s; python {sys.executable}")
    only = set(args.only.split(",")) if args.only else None
    mem_env = {} if DRY else {"XLA_PYTHON_CLIENT_MEM_FRACTION":
                              os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")}
    untied = False
    for name, cap in STAGES:
        if only and name not in only:
            continue
        if DRY:
            cap = 90
        env = dict(mem_env)
        peak = d.results["stages"].get("env_peak", {}).get("peak_flops")
        if peak:
            env["GPU_CHECK_PEAK_FLOPS"] = repr(float(peak))
        if untied:
            env["GPU_CHECK_TIE"] = "0"
        rc, rec = d.run_stage(name, cap, env_extra=env)
        if (name.startswith("mfu_") and rc not in (0, None, OOM_RC) and not untied
                and "element type" in str(rec.get("error", ""))):
            # A backend that cannot run the tied-embedding dot (as XLA's CPU backend): untied
            # from here on (the LM head is then a separate matrix; FLOPs per token the same).
            untied = True
            env["GPU_CHECK_TIE"] = "0"
            d.say(f"#### {name}: failed on the tied-embedding dot; retrying untied")
            previous = {k: v for k, v in rec.items() if k != "traceback_tail"}
            rec.clear()
            rec["tied_attempt"] = previous
            rc, rec = d.run_stage(name, cap, env_extra=env, attempt=1)
        if name.startswith("mfu_"):
            default = (4 if DRY else 8) if "_sft_" in name else (2 if DRY else 4)
            batch, attempt = default, 0
            while rc == OOM_RC and batch > 1:
                batch //= 2
                attempt += 1
                d.say(f"#### {name}: out of memory; retrying with batch {batch}")
                previous = rec.pop("oom_attempts", [])
                snapshot = {k: v for k, v in rec.items() if k != "traceback_tail"}
                rec.clear()
                rec["oom_attempts"] = previous + [snapshot]
                rc, rec = d.run_stage(name, cap, extra_args=("--batch", str(batch)),
                                      env_extra=env, attempt=attempt)
    d.summary()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", default=None, help="run one stage in this process (child)")
    ap.add_argument("--attempt", type=int, default=0)
    ap.add_argument("--batch", type=int, default=0, help="mfu stages: rows (SFT) / pairs (DPO)")
    ap.add_argument("--only", default="", help="driver: comma-separated stages to run")
    ap.add_argument("--dry", action="store_true", help="CPU dry run with tiny shapes")
    args = ap.parse_args()
    global DRY
    if args.dry:
        DRY = True
        os.environ["GPU_CHECK_DRY"] = "1"
    if args.stage is None:
        return driver_main(args)
    if DRY:
        os.environ["JAX_PLATFORMS"] = "cpu"
    log(f"[stage {args.stage}] pid {os.getpid()}, started {time.strftime('%H:%M:%S')}")
    t0 = time.perf_counter()
    try:
        child_main(args)
    except Exception as e:
        rec = error_record(e)
        emit(**rec)
        if is_oom(e):
            log(f"[stage {args.stage}] OUT OF MEMORY")
            sys.exit(OOM_RC)
        sys.exit(1)
    log(f"[stage {args.stage}] done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
