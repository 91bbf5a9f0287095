"""Convert between Hugging Face checkpoints, medjax model checkpoints and training workdirs.

  python -m medjax.convert --to=medjax --src=HF_DIR --dst=CKPT_DIR [--dtype=bfloat16]
  python -m medjax.convert --to=hf --src=CKPT_DIR --dst=HF_DIR [--dtype=bfloat16]
  python -m medjax.convert --to=hf --src=WORKDIR --dst=HF_DIR      (a medjax.train run)
  python -m medjax.convert --to=medjax --src=WORKDIR --dst=CKPT_DIR
  python -m medjax.convert --to=peft --src=LORA_WORKDIR --dst=ADAPTER_DIR  (a LoRA run)

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

A LoRA run (``model.lora.rank`` > 0) is read with its adapters merged into its base by
``--to=hf`` / ``--to=medjax``; ``--to=peft`` writes the adapters alone as PEFT's
``adapter_config.json`` + ``adapter_model.safetensors`` (and the run's tokenizer), which
``peft.PeftModel.from_pretrained(base, ADAPTER_DIR)`` loads; its
``base_model_name_or_path`` is the base directory the run loaded. medjax reads such a
directory back anywhere it reads a model (merged), and ``model.init_from=ADAPTER_DIR``
continues training the adapters.

An existing destination is never replaced unless --overwrite is given.
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("to", None, ["medjax", "hf", "peft"], "Target format (peft: a LoRA run's "
                 "adapters).")
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

    if to == "peft":
        return export_peft(src, dst, overwrite=overwrite, tokenizer=tokenizer,
                           template=template)
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


def export_peft(src: str, dst: str, *, overwrite: bool = False, tokenizer: str | None = None,
                template: str | None = None) -> None:
    """A LoRA workdir's adapters as a PEFT adapter directory (and the run's tokenizer)."""
    import os
    import shutil
    import types

    import jax

    from medjax.data.hf_export import save_tokenizer
    from medjax.data.model_tools import model_data_tools
    from medjax.models import describe
    from medjax.models.load import lora_trainable
    from medjax.models.lora import save_peft

    about = describe(src)
    if about["kind"] != "workdir" or about.get("lora") is None:
        raise ValueError(f"--to=peft: {src} is not the workdir of a LoRA run (model.lora.rank "
                         "> 0); --to=hf writes a whole model")
    if os.path.exists(dst) and os.listdir(dst):
        if not overwrite:
            raise FileExistsError(f"{dst}: exists (pass --overwrite to replace it)")
        shutil.rmtree(dst)
    base = about.get("lora_base") or {}
    base_path = base.get("path")
    if base.get("source") != "hf":
        what = "a seeded random init" if base.get("source") == "preset" else base_path
        _warn(f"the run's base ({what}) is not a Hugging Face directory: PEFT loads the "
              "adapters onto one (write it with --to=hf from the same source); "
              f"base_model_name_or_path is {base_path!r}")
    trainable, _ = lora_trainable(src, about, None)
    config = about["config"].replace(lora=about["lora"])
    if jax.process_index() == 0:
        save_peft(config, trainable, dst, base_path)
        tok, tpl = model_data_tools(
            types.SimpleNamespace(tokenizer=about["tokenizer"], template=about["template"]),
            src, tokenizer, template,
            warn=lambda m: _warn(f"{m}; the adapter directory has no tokenizer"))
        if tok is not None:
            save_tokenizer(tok, tpl, dst)


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
