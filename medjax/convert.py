"""Convert between Hugging Face checkpoints, medjax model checkpoints and training workdirs.

  python -m medjax.convert --to=medjax --src=HF_DIR --dst=CKPT_DIR [--dtype=bfloat16]
  python -m medjax.convert --to=hf --src=CKPT_DIR --dst=HF_DIR [--dtype=bfloat16]
  python -m medjax.convert --to=hf --src=WORKDIR --dst=HF_DIR      (a medjax.train run)
  python -m medjax.convert --to=medjax --src=WORKDIR --dst=CKPT_DIR

``--src`` is anything ``medjax.models.load`` reads: a Hugging Face directory, a
medjax model checkpoint, or a training workdir (the parameters of its newest
checkpoint, for every objective). A medjax checkpoint records the tokenizer and
chat template the model goes with. A reward model (a ``reward`` run, or a
checkpoint holding a ``reward_head``) is written as
``LlamaForSequenceClassification`` / ``MistralForSequenceClassification`` with
one label, which ``transformers.AutoModelForSequenceClassification`` loads.
transformers scores each row at its rightmost token that is not
``pad_token_id``: ``--pad_token_id`` sets it; by default it is the pad id of the
tokenizer the model was trained with (an id that is an error if its chat
template ends every response with it), else the model's first EOS id.
``--to=medjax`` of such a directory keeps the reward head.

An existing destination is never replaced unless --overwrite is given.
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("to", None, ["medjax", "hf"], "Target format.")
flags.DEFINE_string("src", None, "Source directory: a Hugging Face model directory, a medjax "
                    "model checkpoint or a medjax.train workdir.")
flags.DEFINE_string("dst", None, "Destination directory.")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                  "Parameter dtype to store (default: as the source).")
flags.DEFINE_integer("max_shard_size", 5 * 2**30, "--to=hf: bytes per safetensors file.")
flags.DEFINE_integer("pad_token_id", None, "--to=hf of a reward model: the pad id written to "
                     "config.json (default: the run's tokenizer's, else the first EOS id).")
for _name, _choices in (("tokenizer", "llama3, mistral or a directory"),
                        ("template", "llama3, mistral, alpaca or hf")):
    flags.DEFINE_string(_name, None, f"--to=hf: the {_name} to include ({_choices}; default: "
                        "the one the model was trained with).")
flags.DEFINE_bool("overwrite", False, "Replace an existing destination.")
flags.mark_flags_as_required(["to", "src", "dst"])


def _warn(msg: str) -> None:
    print(f"medjax.convert: warning: {msg}", file=sys.stderr)


def convert(to: str, src: str, dst: str, *, dtype: str | None = None,
            max_shard_size: int = 5 * 2**30, overwrite: bool = False,
            pad_token_id: int | None = None, tokenizer: str | None = None,
            template: str | None = None) -> None:
    import json
    import os

    import jax

    from medjax.data.hf_export import end_of_turn, save_tokenizer, token_ids
    from medjax.data.model_tools import model_data_tools
    from medjax.models import load, save_hf
    from medjax.models.checkpoint import save_model

    model = load(src, **({"param_dtype": dtype} if dtype else {}))
    if to == "medjax":
        save_model(model.config, model.params, dst, overwrite=overwrite,
                   tokenizer=tokenizer or model.tokenizer, template=template or model.template)
        return
    tok, tpl = model_data_tools(model, src, tokenizer, template,
                                warn=lambda m: _warn(f"{m}; the export has no tokenizer"))
    ids = token_ids(tok, tpl) if tok is not None else {}
    if model.head == "reward":
        end = end_of_turn(tpl)
        if pad_token_id is None:
            pad_token_id = ids.get("pad_token_id")
        if pad_token_id is None and model.config.eos_token_id:
            _warn(f"pad_token_id defaults to the model's EOS id {model.config.eos_token_id[0]}: "
                  "transformers then scores a row that ends with EOS at the token before "
                  "it; pass --pad_token_id if the training rows ended with EOS")
        if pad_token_id is not None and pad_token_id == end:
            raise ValueError(
                f"pad_token_id={pad_token_id} ends every response of the run's chat template: "
                "transformers would score the token before it, not the one the reward head "
                "was trained on; pass --pad_token_id=ID of a token no response ends with")
    if pad_token_id is not None:
        ids["pad_token_id"] = pad_token_id
    # config.json takes a pad id only when one is asked for or a reward model needs it
    # (Meta's Llama-3 configs have none); generation_config.json always has it.
    save_hf(model.config, model.params, dst, max_shard_size=max_shard_size,
            overwrite=overwrite, pad_token_id=pad_token_id,
            token_ids={k: v for k, v in ids.items() if k != "pad_token_id"})
    if tok is not None and jax.process_index() == 0:
        save_tokenizer(tok, tpl, dst)
        with open(os.path.join(dst, "generation_config.json"), "w") as f:
            json.dump(ids, f, indent=2)


def main(argv):
    del argv
    try:
        convert(FLAGS.to, FLAGS.src, FLAGS.dst, dtype=FLAGS.dtype,
                max_shard_size=FLAGS.max_shard_size, overwrite=FLAGS.overwrite,
                pad_token_id=FLAGS.pad_token_id, tokenizer=FLAGS.tokenizer,
                template=FLAGS.template)
    except (OSError, ValueError) as e:
        sys.exit(f"medjax.convert: error: {e}")
    print(f"wrote {FLAGS.dst}")


if __name__ == "__main__":
    app.run(main)
