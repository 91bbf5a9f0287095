"""Convert between Hugging Face checkpoints and medjax model checkpoints.

  python -m medjax.convert --to=medjax --src=HF_DIR --dst=CKPT_DIR [--dtype=bfloat16]
  python -m medjax.convert --to=hf --src=CKPT_DIR --dst=HF_DIR [--dtype=bfloat16]

An existing destination is never replaced unless --overwrite is given.
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("to", None, ["medjax", "hf"], "Target format.")
flags.DEFINE_string("src", None, "Source directory (HF model dir for --to=medjax, medjax "
                    "checkpoint for --to=hf).")
flags.DEFINE_string("dst", None, "Destination directory.")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                  "Parameter dtype to store (default: as the source).")
flags.DEFINE_integer("max_shard_size", 5 * 2**30, "--to=hf: bytes per safetensors file.")
flags.DEFINE_bool("overwrite", False, "Replace an existing destination.")
flags.mark_flags_as_required(["to", "src", "dst"])


def convert(to: str, src: str, dst: str, *, dtype: str | None = None,
            max_shard_size: int = 5 * 2**30, overwrite: bool = False) -> None:
    from medjax.models import load_hf, save_hf
    from medjax.models.checkpoint import load_model, save_model

    if to == "medjax":
        if dtype is None:  # keep the checkpoint's own dtype
            import json
            import os
            try:
                with open(os.path.join(src, "config.json")) as f:
                    hf = json.load(f)
            except (OSError, ValueError):
                hf = {}  # load_hf reports the problem with its file name
            dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
            if dtype not in ("float32", "bfloat16", "float16"):
                dtype = "float32"
        config, params = load_hf(src, dtype=dtype)
        save_model(config, params, dst, overwrite=overwrite)
    else:
        overrides = {"param_dtype": dtype} if dtype else {}
        config, params = load_model(src, **overrides)
        save_hf(config, params, dst, max_shard_size=max_shard_size, overwrite=overwrite)


def main(argv):
    del argv
    try:
        convert(FLAGS.to, FLAGS.src, FLAGS.dst, dtype=FLAGS.dtype,
                max_shard_size=FLAGS.max_shard_size, overwrite=FLAGS.overwrite)
    except (OSError, ValueError) as e:
        sys.exit(f"medjax.convert: error: {e}")
    print(f"wrote {FLAGS.dst}")


if __name__ == "__main__":
    app.run(main)
