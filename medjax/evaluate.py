"""Medical multiple-choice benchmarks, scored as lm-evaluation-harness scores them (0-shot).

  python -m medjax.evaluate --model=DIR --tasks=medqa_4options,medmcqa,pubmedqa,mmlu_medical \\
      [--data_dir=DIR] [--limit=N] [--add_bos=auto|true|false] [--out=results.json]

DIR: a Hugging Face directory, a medjax model checkpoint or a medjax.train workdir (its
newest checkpoint). ``--tasks``: ``medqa_4options``, ``medmcqa``, ``pubmedqa``,
``mmlu_<subject>``, the groups ``mmlu_medical`` and ``multimedqa``, or task files
(``.yaml``/``.json``, lm-eval's fields; ``medjax.evals.tasks``). ``--data_dir`` holds the
tasks' local files (default: the small bundled samples, for a smoke run; their scores
mean nothing about the real benchmarks). ``--add_bos``: ``auto`` does what current
lm-eval does (the tokenizer's own choice: BOS for Llama-3 and Mistral); the 2024 model
cards of the seeds were scored without BOS (``false``). The table and the JSON say which
was used.

``--out=results.json`` writes lm-eval-shaped results and, beside it,
``samples_<task>.jsonl`` with each question's per-choice log-likelihoods, laid out as
lm-eval's ``--log_samples``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from absl import flags

FLAGS = flags.FLAGS


def bundled_data_dir() -> str:
    from .data.samples import path as sample_path
    return os.path.join(os.path.dirname(sample_path("mcq.jsonl")), "bench")


def _mesh(fsdp: int, tensor: int):
    import jax
    if jax.device_count() == 1:
        return None
    from .parallel import make_mesh
    return make_mesh(data=1, fsdp=fsdp, tensor=tensor)


def run(model_dir: str, task_names: list[str], *, data_dir: str | None = None,
        limit: int | None = None, add_bos: str = "auto", out: str | None = None,
        batch_size: int = 8, max_length: int | None = None, dtype: str | None = None,
        tokenizer: str | None = None, fsdp: int = -1, tensor: int = 1,
        progress: bool = True, print_fn=print) -> dict:
    import jax

    from .data.model_tools import model_data_tools
    from .evals.run import evaluate, table
    from .evals.score import tokenizer_adds_bos
    from .evals.tasks import resolve
    from .models.load import load

    data_dir = data_dir or bundled_data_dir()
    tasks, groups = resolve(task_names, data_dir)  # bad names or files fail before loading
    mesh = _mesh(fsdp, tensor)
    model = load(model_dir, mesh=mesh, **({"dtype": dtype} if dtype else {}))
    if model.head != "lm":
        raise ValueError(f"{model_dir}: a reward model has no language-model head to score "
                         "answers with")
    tok, _ = model_data_tools(model, model_dir, tokenizer, None,
                              warn=lambda m: print(f"medjax.evaluate: warning: {m}",
                                                   file=sys.stderr))
    if tok is None:
        raise ValueError(f"{model_dir}: no tokenizer; pass --tokenizer=llama3|mistral|DIR")
    bos = tokenizer_adds_bos(tok) if add_bos == "auto" else add_bos == "true"
    window = max_length or model.config.max_position_embeddings
    with (jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()):
        result = evaluate(model.config, model.params, tok, tasks, groups, add_bos=bos,
                          max_length=window, limit=limit, batch_size=batch_size,
                          progress=progress)
    result["config"].update(model=os.path.abspath(model_dir), data_dir=os.path.abspath(data_dir),
                            tokenizer=str(getattr(tok, "name", tok)),
                            dtype=model.config.dtype)
    print_fn(f"{model_dir}: 0-shot, BOS {'added' if bos else 'not added'} "
             f"(--add_bos={add_bos}), window {window} tokens, {model.config.dtype}, "
             f"data {data_dir}")
    print_fn(table(result))
    if out:
        samples = result.pop("samples")
        folder = os.path.dirname(os.path.abspath(out))
        os.makedirs(folder, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        for name, rows in samples.items():
            path = os.path.join(folder, f"samples_{name}.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        result["samples"] = samples
        print_fn(f"wrote {out} and samples_<task>.jsonl for {len(samples)} task(s) in {folder}")
    return result


def main(argv) -> None:
    del argv
    f = FLAGS
    from .evals.tasks import TaskError
    try:
        run(f.model, [t for t in f.tasks if t.strip()], data_dir=f.data_dir, limit=f.limit,
            add_bos=f.add_bos, out=f.out, batch_size=f.batch_size, max_length=f.max_length,
            dtype=f.dtype, tokenizer=f.tokenizer, fsdp=f.fsdp, tensor=f.tensor)
    except (OSError, ValueError, TaskError) as e:
        sys.exit("medjax.evaluate: error: " + " ".join(str(e).split()))


def _define_flags():
    flags.DEFINE_string("model", None, "HF directory, medjax checkpoint or training workdir.")
    flags.DEFINE_list("tasks", ["multimedqa"], "Tasks, groups (mmlu_medical, multimedqa) or "
                      "task files (.yaml/.json).")
    flags.DEFINE_string("data_dir", None, "Folder of the tasks' files (default: the bundled "
                        "samples).")
    flags.DEFINE_integer("limit", None, "Score only the first N questions of each task.")
    flags.DEFINE_enum("add_bos", "auto", ["auto", "true", "false"],
                      "auto: as current lm-eval (the tokenizer's default; BOS for Llama-3 and "
                      "Mistral); false: as lm-eval before 0.4.9.2 (the seeds' 2024 cards).")
    flags.DEFINE_string("out", None, "Write results JSON here and samples_<task>.jsonl beside it.")
    flags.DEFINE_integer("batch_size", 8, "Rows per forward pass.")
    flags.DEFINE_integer("max_length", None, "Model window in tokens (default: the model's "
                         "max_position_embeddings, as lm-eval); longer inputs keep their end.")
    flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the "
                      "model's).")
    flags.DEFINE_string("tokenizer", None, "Override: llama3, mistral or a directory.")
    flags.DEFINE_integer("fsdp", -1, "Mesh: parameter shards (-1: all devices).")
    flags.DEFINE_integer("tensor", 1, "Mesh: tensor-parallel size.")
    flags.mark_flag_as_required("model")


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
