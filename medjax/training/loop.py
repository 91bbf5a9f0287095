"""``run(config, workdir)``: the training job every objective runs, composed of
``setup`` (state.py), the data pipelines, the reference, a ``Trainer`` (steps + hooks)
and its default hooks. Restarting the same command resumes from the newest complete
checkpoint.
"""

from __future__ import annotations

import functools
import logging
import os

import jax

from ..data.pipeline import data_shards, eval_plan, pipeline_from_config
from ..data.sources import expand_sources
from ..data.validate import source_specs
from . import hooks
from .batches import one_pass, to_global
from ..configs import check as check_config
from .checkpointing import (Checkpointer, check_workdir, saved_data_shards, write_config,
                            write_model_meta)
from .evaluate import Evaluator
from .metrics import MetricsWriter, device_peak_flops, train_flops_per_token
from .reference import build_reference
from .state import Setup, data_tools, setup
from .trainer import Trainer

log = logging.getLogger(__name__)


def run(config, workdir: str) -> dict:
    """Trains according to ``config`` in ``workdir``; returns the last logged metrics."""
    from ..parallel.sharding import axis_rules, rules_for
    with axis_rules(rules_for(bool(config.mesh.get("expert_parallel", False)))):
        return _run(config, workdir)


def _run(config, workdir: str) -> dict:
    check_config(config)  # choices, before anything is built or read
    os.makedirs(workdir, exist_ok=True)
    keep_data_shards(config, workdir)
    if config.epochs:  # the number of steps (and the schedule) follows from the data
        plan_steps(config)
    s = setup(config)
    check_workdir(workdir, s.model_config, config.objective.name)
    write_model_meta(workdir, s.model_config, s.unit.head, objective=s.unit.name,
                     tokenizer=s.tokenizer_spec, template=getattr(s.template, "name", None),
                     **({} if s.frozen is None else {"lora_base": s.model.identity}))
    write_config(workdir, config)
    pipe = functools.partial(pipeline_from_config, config, s.tokenizer, s.template,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
    rows = config.batch_size // jax.process_count()
    passes = {"train": lambda: one_pass(pipe(one_pass=True), rows)()}  # built if needed
    held_out, _, described = eval_plan(config.data)
    if held_out:  # built, and its records validated, once
        passes["eval"] = one_pass(pipe(eval=True), rows)
        log.info("evaluating on %s every %d steps and at the last", described,
                 config.eval.every)
    else:
        log.warning("no held-out evaluation: data.eval_sources is empty (set it to held-out "
                    "files, or data.eval_split to a fraction of the training records)")
    with jax.set_mesh(s.mesh):  # the reference is the *starting* policy
        references = build_reference(
            config, s.unit, s.mesh, s.model_config.replace(lora=None),
            s.state["params"] if s.frozen is None else s.frozen, share=s.frozen is not None,
            passes=passes,
            workdir=workdir, fingerprint=lambda: reference_fingerprint(config, s),
            to_global=functools.partial(to_global, sharding=s.batch_sharding),
            sharding=s.batch_sharding)
    trainer = Trainer(config, s, pipe(), references=references, checkpointer=Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save))
    writer = None
    try:
        start = trainer.restore()
        if start and jax.process_index() == 0:
            print(f"resuming from the checkpoint at step {start} in {workdir}"
                  + (" (already complete: remove the workdir to train again)"
                     if start >= config.steps else ""), flush=True)
        writer = MetricsWriter(workdir, resume_step=start,
                               tensorboard=config.logging.tensorboard)
        evaluate = hooks.Evaluate(Evaluator(
            passes["eval"], s.eval_fn, functools.partial(trainer.device_batch, split="eval"),
            max_batches=config.eval.batches,
            name=described), writer, trainer.results
        ) if "eval" in passes else None
        samples = sample_hook(config, s, writer, workdir, start)
        bench = benchmark_hook(config, s, writer, trainer.results)
        add_default_hooks(trainer, config, s, writer, evaluate, samples, bench)
        if config.eval.at_start and start == 0:  # step 0: before any training
            with jax.set_mesh(s.mesh):
                for hook in (evaluate, samples, bench):
                    if hook is not None:
                        hook.run(0, trainer.state["params"])  # eval_fn binds LoRA's base
        for _ in trainer.steps():
            pass
        trainer.finish()
    finally:
        trainer.close()
        if writer is not None:
            writer.close()
    return trainer.results


def keep_data_shards(config, workdir: str) -> None:
    """With ``data.shards`` at its default (0), a resumed run keeps the shard count its
    checkpoint was written with (runs before the default became gcd(batch_size, 8)
    had one per process), so it continues with the same global batches."""
    saved = saved_data_shards(workdir)
    if config.data.shards or not saved or saved == data_shards(config, jax.process_count()):
        return
    if saved % jax.process_count() == 0 and config.batch_size % saved == 0:
        log.info("data.shards=%d, as in the checkpoint being resumed", saved)
        with config.unlocked():
            config.data.shards = saved


def sample_hook(config, s: Setup, writer, workdir: str, resume_step: int = 0):
    """The ``eval.samples`` hook (None without prompts or for a reward model)."""
    prompts = config.eval.samples
    if isinstance(prompts, str):
        prompts = [p.strip() for p in prompts.split(";") if p.strip()]
    if not prompts or s.unit.head != "lm" or s.tokenizer is None:
        return None
    from ..data.hf_export import end_of_turn
    from ..generate import generate
    tok, tpl = s.tokenizer, s.template
    stop = tuple(i for i in (tok.eos_id, end_of_turn(tpl)) if i is not None)

    def encode(prompt: str) -> list[int]:
        if tpl is not None:
            return tpl.encode_prompt([{"role": "user", "content": str(prompt)}])
        return ([] if tok.bos_id is None else [tok.bos_id]) + tok.encode(str(prompt))

    return hooks.SampleCompletions(
        list(prompts), encode, lambda r: tok.decode([i for i in r.ids if i not in stop]),
        lambda params, ids: generate(s.model_config, s.model_params(params), ids,
                                     max_new_tokens=config.eval.sample_tokens, stop_ids=stop),
        writer, os.path.join(workdir, "samples.jsonl"), resume_step)


def benchmark_hook(config, s: Setup, writer, results: dict):
    """The ``eval.benchmarks`` hook (None without tasks). Task names and files are checked
    here, before any training step."""
    b = config.eval.benchmarks
    names = [t.strip() for t in str(b.tasks).split(",") if t.strip()]
    if not names:
        return None
    if s.unit.head != "lm" or s.tokenizer is None:
        raise ValueError(f"eval.benchmarks.tasks={b.tasks!r}: needs a language model with a "
                         "tokenizer (not a reward model)")
    from ..evals.run import evaluate
    from ..evals.score import tokenizer_adds_bos
    from ..evals.tasks import resolve
    from ..evaluate import bundled_data_dir
    tasks, groups = resolve(names, b.data_dir or bundled_data_dir())
    for task in tasks:  # a missing field fails now, not after an hour of training
        task.load(b.limit or None)
    bos = tokenizer_adds_bos(s.tokenizer) if b.add_bos == "auto" else b.add_bos == "true"
    window = b.max_length or s.model_config.max_position_embeddings
    log.info("eval.benchmarks: %s (BOS %s, window %d)", ", ".join(t.name for t in tasks),
             "added" if bos else "not added", window)
    return hooks.Benchmarks(
        lambda params: evaluate(s.model_config, s.model_params(params), s.tokenizer, tasks,
                                groups,
                                add_bos=bos, max_length=window, limit=b.limit or None,
                                progress=False),
        writer, results)


def add_default_hooks(trainer: Trainer, config, s: Setup, writer, evaluate,
                      samples=None, bench=None) -> None:
    """Guard, metrics, progress bar, preemption, checkpoints and eval, in that order (a
    step's checkpoint is written before its evaluation, which can then never cost it)."""
    results = trainer.results
    trainer.add_hook(hooks.NonFiniteGuard(config.optimizer.skip_nonfinite,
                                          trainer.ckpt.latest_step))
    trainer.add_hook(hooks.LogMetrics(
        writer, every=config.logging.every, last_step=config.steps, results=results,
        flops_per_token=train_flops_per_token(
            s.model_config, config.seq_len, head=s.unit.head,
            trainable=sum(x.size for x in jax.tree.leaves(s.state["params"]))),
        peak_flops=config.logging.peak_flops or device_peak_flops()))
    if jax.process_index() == 0 and config.logging.progress:
        trainer.add_hook(hooks.ProgressBar(config.steps, trainer.start, results))
    trainer.add_hook(hooks.Preemption(trainer.save))
    trainer.add_hook(hooks.Checkpoint(trainer.save), config.checkpoint.every, last=True)
    if evaluate is not None and config.eval.every:  # and always at the last step
        trainer.add_hook(evaluate, config.eval.every, last=True)
    if samples is not None:  # with the evaluations (at the last step when eval.every is 0)
        trainer.add_hook(samples, config.eval.every or config.steps, last=True)
    if bench is not None:
        every = config.eval.benchmarks.every or config.eval.every or config.steps
        trainer.add_hook(bench, every, last=True)


def plan_steps(config) -> int:
    """``config.steps`` from ``config.epochs``: the batches one epoch of the training data
    makes (the real pipeline: every data shard packed or padded as in training, the
    shortest shard deciding, every process agreeing) times the epochs. A ``steps`` other
    than 0 must agree with it. Later epochs are shuffled differently and may pack into a
    few rows more or less; the run stops when the data ends."""
    import numpy as np

    from .batches import all_processes_values
    _, tokenizer, template = data_tools(config)
    one = config.copy_and_resolve_references()
    one.epochs = 1
    batches, real, tokens = 0, 0, 0
    for local in pipeline_from_config(one, tokenizer, template,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count()):
        batches += 1
        real += int(np.sum(local["segment_ids"] != 0))
        tokens += local["segment_ids"].size
    batches = int(all_processes_values(batches).min())
    if not batches:
        raise ValueError(f"data.sources: one epoch of the training data makes no full batch of "
                         f"{config.batch_size} (use a smaller batch_size or more data)")
    steps = batches * config.epochs
    if config.steps and config.steps != steps:
        raise ValueError(f"steps={config.steps} and epochs={config.epochs} disagree: "
                         f"{config.epochs} epochs of the data are {steps} steps ({batches} a "
                         "epoch); set --config.steps=0 to let epochs decide, or epochs=0")
    log.info("data: %d steps per epoch (%d rows of %d tokens a step, %.0f%% real tokens in "
             "this process's rows), %d epochs -> %d steps", batches, config.batch_size,
             config.seq_len, 100 * real / max(tokens, 1), config.epochs, steps)
    with config.unlocked():
        config.steps = steps
    return steps


def reference_fingerprint(config, s: Setup) -> dict:
    """What a precomputed reference table is made from: the data files (path, size,
    modification time), the starting model, the tokenisation settings."""
    def files(sources):
        out = []
        for spec in source_specs(sources):
            for f in expand_sources(spec.path):
                st = os.stat(f)
                out.append([os.path.abspath(f), st.st_size, st.st_mtime_ns, spec.format])
        return out

    d = config.data
    held_out = eval_plan(d)[0]
    return {"train": files(d.sources), "eval": files(held_out) if held_out else [],
            "eval_split": d.eval_split,
            "model": s.model.identity, "dtype": s.model_config.dtype,
            "reference": config.objective.get("reference", ""),
            "tokenizer": s.tokenizer_spec, "template": getattr(s.template, "name", None),
            "format": d.format, "fields": d.fields, "seq_len": config.seq_len,
            "max_prompt_length": d.max_prompt_length, "truncation_mode": d.truncation_mode,
            "max_completion_length": config.objective.get("max_completion_length", 0),
            "pack_pairs": d.get("pack_pairs", False)}
