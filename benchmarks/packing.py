"""Packing efficiency against the number of logical data shards, on real data.

    python benchmarks/packing.py [--config=configs/sft.py] [--config.key=value ...]
        [--shards=1,2,4,8] [--bins=0]
    # padding-free DPO pairs on UltraMedical-like lengths / 4 at the recipe's limits / 4:
    python -c "import sys; sys.path.insert(0, 'benchmarks'); import synthetic; \
        synthetic.write_data('/tmp/prefs.jsonl', 600, 4.0)"
    python benchmarks/packing.py --config=configs/dpo.py --config.data.pack_pairs=true \
        --config.data.sources=/tmp/prefs.jsonl --config.seq_len=512 \
        --config.data.max_prompt_length=128 --config.batch_size=8 --shards=8 --bins=16

One epoch of the config's training data through the real pipeline
(`pipeline_from_config`, as training reads it), once per `data.shards` value:
prints the batches it makes and the fraction of real (non-padding) tokens.
Each shard packs its own rows (first-fit over `max(rows per shard batch,
MIN_PACKING_BINS)` open bins, `MIN_PAIR_PACKING_BINS` for preference pairs and KTO
examples with `data.pack_pairs`); `--bins=N` overrides that minimum to show what
fewer open bins cost when a shard's batch is a single row.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/sft.py", "An SFT or pretraining config, "
                                "or a DPO / KTO / reward one with data.pack_pairs.",
                                lock_config=True)
flags.DEFINE_list("shards", ["1", "2", "4", "8"], "data.shards values to compare.")
flags.DEFINE_integer("bins", 0, "Minimum open packing bins per shard (0: medjax's default).")


def main(argv):
    del argv
    from medjax.data import pipeline
    from medjax.training.state import data_tools
    if FLAGS.bins:
        pipeline.MIN_PACKING_BINS = pipeline.MIN_PAIR_PACKING_BINS = FLAGS.bins
    c = FLAGS.config
    _, tokenizer, template = data_tools(c)
    bins = (pipeline.MIN_PAIR_PACKING_BINS if c.data.get("pack_pairs", False)
            else pipeline.MIN_PACKING_BINS)
    print(f"{c.objective.name}: batch_size {c.batch_size} x seq_len {c.seq_len}, "
          f"min packing bins {bins}")
    for shards in map(int, FLAGS.shards):
        with c.unlocked():
            c.epochs, c.steps, c.data.shards = 1, 0, shards
        batches = real = total = 0
        for local in pipeline.pipeline_from_config(c, tokenizer, template):
            batches += 1
            real += int(np.sum(local["segment_ids"] != 0))
            total += local["segment_ids"].size
        print(f"data.shards={shards}: {batches} batches, {real / total:.1%} real tokens")


if __name__ == "__main__":
    app.run(main)
