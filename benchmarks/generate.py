"""Generation speed: medjax's KV-cache decoding vs transformers' generate, same weights.

    python benchmarks/generate.py [--batches=1,16] [--prompt_len=128] [--new_tokens=128]
        [--repeats=3]

One random model of the "medium" shape (hidden 512, 8 layers, 8 query / 4 KV heads,
MLP 1536, vocabulary 32,000, float32) is built with transformers and loaded into
medjax, so both run the same weights in the same process on the same machine. For
each batch size: greedy generation of exactly ``new_tokens`` tokens (no stop token)
from random prompts of ``prompt_len`` tokens. Reported per framework: prefill time
(generation of 1 token), per-token decode time ((total - prefill) / (new - 1)),
tokens/s (batch x new / total), and for medjax the first call's compile time
separately. The median of ``repeats`` runs is used. medjax runs with the layer scan on
stacked weights and on weights split per layer beforehand (``--scan_layers``).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("batches", ["1", "16"], "Batch sizes.")
flags.DEFINE_integer("prompt_len", 128, "Prompt tokens.")
flags.DEFINE_integer("new_tokens", 128, "New tokens per row.")
flags.DEFINE_integer("repeats", 3, "Timed runs per setting (median).")
flags.DEFINE_list("scan_layers", ["true", "split"],
                  "medjax runs: 'true': layer scan on stacked weights (each step slices each "
                  "layer); 'false': scan off, the stacked weights split inside the jit (a "
                  "second copy); 'split': weights split beforehand by "
                  "models.decoder.split_layers, as the command line and the online loop do.")

SHAPE = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
             rope_theta=500000.0)


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from medjax.generate import generate
    from medjax.models import load_hf
    from medjax.models.decoder import split_layers

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE)).eval()
    path = tempfile.mkdtemp(prefix="medjax_gen_bench_")
    hf.save_pretrained(path)
    config, params = load_hf(path)
    n_new, t = FLAGS.new_tokens, FLAGS.prompt_len
    print(f"medium shape {SHAPE}; prompt {t}, new {n_new}; JAX {jax.__version__} on "
          f"{jax.devices()[0].platform}, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    for b in map(int, FLAGS.batches):
        prompts = np.random.RandomState(b).randint(0, SHAPE["vocab_size"], (b, t))
        rows = prompts.tolist()

        mine = {}
        for scan in FLAGS.scan_layers:
            split = scan.lower() == "split"
            cfg = config.replace(scan_layers=scan.lower() in ("1", "true", "on"))
            weights = split_layers(jax.tree.map(jnp.copy, params)) if split else params

            def ours(new, cfg=cfg, weights=weights):
                return generate(cfg, weights, rows, max_new_tokens=new, stop_ids=())

            start = time.perf_counter()
            first = ours(n_new)
            compile_total = time.perf_counter() - start
            start = time.perf_counter()
            ours(1)
            compile_prefill = time.perf_counter() - start
            assert all(len(g.ids) == n_new for g in first)
            mine["medjax split" if split else f"medjax scan={cfg.scan_layers}"] = (
                _median_time(lambda: ours(n_new), FLAGS.repeats),
                _median_time(lambda: ours(1), FLAGS.repeats), compile_total, compile_prefill)
        ids = torch.tensor(prompts)
        mask = torch.ones_like(ids)

        def theirs(new):
            with torch.no_grad():
                return hf.generate(ids, attention_mask=mask, max_new_tokens=new,
                                   min_new_tokens=new, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)

        out = theirs(n_new)
        assert out.shape == (b, t + n_new)
        same = (out[:, t:].numpy() == np.array([g.ids for g in first])).mean()
        hf_total = _median_time(lambda: theirs(n_new), FLAGS.repeats)
        hf_prefill = _median_time(lambda: theirs(1), FLAGS.repeats)
        timings = {**mine, "transformers": (hf_total, hf_prefill, None, None)}
        for name, (tot, pre, _, _) in timings.items():
            print(f"batch {b:3d} {name:>18}: prefill {pre * 1e3:8.1f} ms, decode "
                  f"{(tot - pre) / (n_new - 1) * 1e3:7.2f} ms/token, "
                  f"{b * n_new / tot:8.1f} tokens/s")
        for name, (tot, _, compile_total, compile_prefill) in mine.items():
            print(f"batch {b:3d}: {name} / transformers tokens/s = {hf_total / tot:.2f}x; "
                  f"first calls (compile + run) {compile_total:.1f} s and "
                  f"{compile_prefill:.1f} s")
        print(f"batch {b:3d}: greedy tokens equal to transformers': {same:.1%}")


if __name__ == "__main__":
    app.run(main)
