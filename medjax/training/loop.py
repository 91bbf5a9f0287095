"""``run(config, workdir)``: the training loop every objective runs in.

config -> mesh -> model (preset / HF dir / medjax checkpoint, born sharded)
-> Grain pipeline -> loss_fn -> jitted train_step (in/out shardings, state
donated) -> Orbax checkpoints {state, data iterator, config} -> metrics.jsonl.
Restarting the same command resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .. import models
from ..data.pipeline import pipeline_from_config
from ..data.templates import get_template
from ..data.tokenizer import get_tokenizer
from ..models.checkpoint import is_model_checkpoint, load_model
from ..objectives import lm_loss
from ..objectives.kto import kto_loss
from ..objectives.preference import LOSS_TYPES, dpo_loss
from ..objectives.reward import init_reward_head, reward_loss
from ..parallel import logical_to_spec, make_mesh
from .checkpointing import (Checkpointer, check_workdir, is_training_workdir,
                            load_trained_params, write_model_config)
from .metrics import MetricsWriter, device_peak_flops, train_flops_per_token
from .optimizer import make_optimizer, make_schedule
from .reference import Reference, needs_reference
from .step import eval_step, train_step

log = logging.getLogger(__name__)


def build_model(config, mesh, vocab_size: int):
    """(ModelConfig, params) from ``model.init_from`` or a random preset."""
    m = config.model
    overrides = dict(param_dtype=m.param_dtype, dtype=m.dtype, remat_policy=m.remat_policy,
                     scan_layers=m.scan_layers, attention=m.attention)
    if m.init_from:
        if is_training_workdir(m.init_from):  # a previous medjax.train run (e.g. SFT)
            return load_trained_params(m.init_from, mesh, **overrides)
        if is_model_checkpoint(m.init_from):
            return load_model(m.init_from, mesh=mesh, **overrides)
        if os.path.isfile(os.path.join(m.init_from, "config.json")):
            cfg, params = models.load_hf(m.init_from, dtype=m.param_dtype, mesh=mesh,
                                         **{k: v for k, v in overrides.items()
                                            if k not in ("param_dtype", "dtype")})
            return cfg.replace(dtype=m.dtype), params
        raise FileNotFoundError(f"model.init_from={m.init_from!r}: neither a Hugging Face "
                                "directory (config.json), a medjax model checkpoint, nor a "
                                "medjax.train workdir")
    cfg = models.get_preset(m.preset, **overrides)
    if m.vocab_size:
        cfg = cfg.replace(vocab_size=m.vocab_size)
    if cfg.vocab_size < vocab_size:
        raise ValueError(f"model vocab_size {cfg.vocab_size} < tokenizer's {vocab_size}; "
                         "set model.vocab_size")
    return cfg, models.init_params(cfg, jax.random.key(config.seed), mesh=mesh)


def make_loss_fn(config, model_config):
    """The objective as ``loss_fn(params, batch, rng) -> (loss, metrics)``."""
    o = config.objective
    if o.name in ("pretrain", "sft"):
        return functools.partial(lm_loss, model_config, z_loss=o.z_loss,
                                 neftune_alpha=o.neftune_alpha, chunk_size=o.loss_chunk_size)
    if o.name == "dpo":
        if o.loss_type not in LOSS_TYPES:
            raise ValueError(f"objective.loss_type={o.loss_type!r}: known {LOSS_TYPES}")
        return functools.partial(dpo_loss, model_config, loss_type=o.loss_type, beta=o.beta,
                                 label_smoothing=o.label_smoothing, gamma=o.gamma,
                                 sft_weight=o.sft_weight, chunk_size=o.loss_chunk_size)
    if o.name == "reward":
        return functools.partial(reward_loss, model_config, margin=o.margin,
                                 centering=o.centering)
    if o.name == "kto":
        return functools.partial(kto_loss, model_config, beta=o.beta,
                                 desirable_weight=o.desirable_weight,
                                 undesirable_weight=o.undesirable_weight,
                                 chunk_size=o.loss_chunk_size)
    raise ValueError(f"objective.name={o.name!r} is not available yet "
                     "(known: 'pretrain', 'sft', 'dpo', 'kto', 'reward')")


class _Preemption:
    """SIGTERM -> save at the next step boundary and exit cleanly.

    Several processes: they must all stop at the same step, whichever of them got the
    signal and when. JAX's preemption sync manager (started by ``jax.distributed``)
    catches SIGTERM itself and agrees on that step; no Python handler is installed
    (it would replace JAX's)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def stop(self, step: int) -> bool:
        """Whether to save and stop after ``step``; every process calls it every step."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __enter__(self):
        if jax.process_count() > 1:
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handler(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint at the next step boundary")
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _global_batch(local: dict, sharding) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local.items()}


def device_batch(local: dict, sharding, reference: Reference | None = None,
                 table: str = "train") -> dict:
    """A process-local numpy batch -> the global on-device batch (+ reference log-probs)."""
    local = dict(local)
    ids = local.pop("example_id", None)
    batch = _global_batch(local, sharding)
    if reference is not None:
        if reference.mode == "precompute":
            real = local["loss_mask"][:, 0].any(-1)
            batch["ref_logps"] = jax.make_array_from_process_local_data(
                sharding, reference.lookup(table, ids, real))
        else:
            batch["ref_logps"] = reference.compute(batch)
    return batch


def _pad_rows(local: dict, rows: int) -> dict:
    """Pads a short last batch with empty rows (segment 0: no targets, no weight)."""
    return {k: np.pad(v, [(0, rows - len(v))] + [(0, 0)] * (v.ndim - 1))
            for k, v in local.items()}


def all_processes(flag: bool) -> np.ndarray:
    """``flag`` of every process (a host-side all-gather; just ``[flag]`` for one)."""
    if jax.process_count() == 1:
        return np.array([flag])
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.array(flag)))


def synced(batches):
    """This process's batches until every process has run out of its own: a process
    that ran out first feeds empty (all-padding, zero-weight) batches meanwhile, so
    that every process runs the same number of steps (collectives stay matched)."""
    it, last = iter(batches), None
    while True:
        local = next(it, None)
        if not all_processes(local is not None).any():
            return
        if local is None:
            local = {k: np.zeros_like(v) for k, v in last.items()}
        last = local
        yield dict(local)  # a consumer may pop keys; ``last`` keeps them all


def eval_pipeline(config, tokenizer, template):
    rows = config.batch_size // jax.process_count()
    pipe = pipeline_from_config(config, tokenizer, template, eval=True,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    return synced(_pad_rows(local, rows) for local in pipe)


def evaluate(config, params, tokenizer, template, batch_sharding, eval_fn, reference=None):
    """Weighted mean eval metrics over ``eval.batches`` batches (or the whole set)."""
    totals, weight = {}, 0.0
    for i, local in enumerate(eval_pipeline(config, tokenizer, template)):
        if config.eval.batches and i >= config.eval.batches:
            break
        batch = device_batch(local, batch_sharding, reference, "eval")
        m = jax.device_get(eval_fn(params, batch))
        w = float(m["weight"])
        for k, v in m.items():
            if k != "weight":
                totals[k] = totals.get(k, 0.0) + float(v) * w
        weight += w
    if not weight:
        raise ValueError(f"data.eval_sources={config.data.eval_sources!r}: no tokens to "
                         "evaluate")
    return {f"eval/{k}": v / weight for k, v in totals.items()}


def batch_sharding_for(mesh: Mesh) -> NamedSharding:
    """Every batch array is split on its leading (rows) dimension over data x fsdp."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def state_shardings(mesh: Mesh, tx: optax.GradientTransformation, params_sharding,
                    opt_state_shape) -> dict:
    """Shardings of ``{step, params, opt_state}``: each optimizer moment follows its
    parameter (``optax.tree_map_params``); counts and the step are replicated."""
    replicated = NamedSharding(mesh, P())
    opt = optax.tree_map_params(tx, lambda _, s: s, opt_state_shape, params_sharding,
                                transform_non_params=lambda _: replicated)
    return {"step": replicated, "params": params_sharding, "opt_state": opt}


def abstract_train_state(config, model_config, mesh: Mesh) -> tuple[dict, dict]:
    """(state, state_sharding) for a preset architecture without allocating anything:
    ``jax.ShapeDtypeStruct`` leaves that carry their shardings, laid out as ``setup``
    lays out the real state (a ``reward_head`` in place of ``lm_head`` for reward)."""
    head = "reward" if config.objective.name == "reward" else "lm"
    params = models.abstract_params(model_config, head)
    params_sharding = models.param_shardings(model_config, mesh, head)
    tx = make_optimizer(config.optimizer, config.steps)
    shape = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params,
             "opt_state": jax.eval_shape(tx.init, params)}
    sharding = state_shardings(mesh, tx, params_sharding, shape["opt_state"])
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         shape, sharding)
    return state, sharding


def make_step_fn(config, model_config, mesh: Mesh, state_sharding: dict,
                 loss_fn: Callable | None = None) -> Callable:
    """``train_step`` for ``config`` (its objective, optimizer, schedule, seed and
    ``optimizer.grad_accum``), jitted with in/out shardings and the state donated.
    ``setup`` and ``benchmarks/memory_plan.py`` compile this same function."""
    if loss_fn is None:
        loss_fn = make_loss_fn(config, model_config)
    tx = make_optimizer(config.optimizer, config.steps)
    schedule = make_schedule(config.optimizer, config.steps)
    return jax.jit(
        functools.partial(train_step, loss_fn=loss_fn, tx=tx, schedule=schedule,
                          base_rng=jax.random.key(config.seed + 1),
                          grad_accum=config.optimizer.grad_accum),
        in_shardings=(state_sharding, batch_sharding_for(mesh)),
        out_shardings=(state_sharding, None), donate_argnums=0)


class Setup(NamedTuple):
    mesh: Mesh
    model_config: models.ModelConfig
    state: dict
    state_sharding: dict
    batch_sharding: NamedSharding
    loss_fn: Callable
    step_fn: Callable  # jitted train_step(state, batch) -> (state, metrics), state donated


def setup(config, vocab_size: int) -> Setup:
    """Mesh, model, sharded train state and the jitted step for ``config``."""
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % n_batch_shards or config.batch_size % jax.process_count():
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the data x fsdp "
                         f"mesh size {n_batch_shards} and process count {jax.process_count()}")
    accum = config.optimizer.grad_accum
    if config.batch_size % accum:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by "
                         f"optimizer.grad_accum={accum}")
    with jax.set_mesh(mesh):
        model_config, params = build_model(config, mesh, vocab_size)
        if config.objective.name != "reward" and models.head_of(params) == "reward":
            raise ValueError(f"model.init_from={config.model.init_from!r} is a reward model (a "
                             f"reward head, no LM head): it cannot start a "
                             f"'{config.objective.name}' run")
        if config.objective.name == "reward":  # a scalar head replaces the LM head
            params = dict(params)
            params.pop("lm_head", None)
            if "reward_head" not in params:
                head_sharding = NamedSharding(mesh, logical_to_spec(("embed",)))
                params["reward_head"] = jax.jit(
                    functools.partial(init_reward_head, model_config),
                    out_shardings={"kernel": head_sharding})(jax.random.key(config.seed + 2))
    loss_fn = make_loss_fn(config, model_config)
    tx = make_optimizer(config.optimizer, config.steps)

    # Optimizer moments follow their parameters' shardings (jit(tx.init) alone would
    # replicate them: zeros carry no sharding); scalars are replicated.
    replicated = NamedSharding(mesh, P())
    params_sharding = jax.tree.map(
        lambda x: x.sharding if isinstance(x.sharding, NamedSharding) else replicated, params)
    state_sharding = state_shardings(mesh, tx, params_sharding, jax.eval_shape(tx.init, params))
    state = {"step": jnp.zeros((), jnp.int32), "params": params,
             "opt_state": jax.jit(tx.init, out_shardings=state_sharding["opt_state"])(params)}
    state = jax.device_put(state, state_sharding)
    batch_sharding = batch_sharding_for(mesh)
    step_fn = make_step_fn(config, model_config, mesh, state_sharding, loss_fn)
    return Setup(mesh, model_config, state, state_sharding, batch_sharding, loss_fn, step_fn)


def run(config, workdir: str) -> dict:
    """Trains according to ``config`` in ``workdir``; returns the last logged metrics."""
    os.makedirs(workdir, exist_ok=True)
    tokenizer = get_tokenizer(config.data.tokenizer)
    mesh, model_config, state, _, batch_sharding, loss_fn, step_fn = setup(
        config, tokenizer.vocab_size)
    check_workdir(workdir, model_config, config.objective.name)
    write_model_config(workdir, model_config, config.objective.name)  # for model.init_from

    template = (get_template(config.data.template, tokenizer)
                if config.objective.name != "pretrain" else None)
    pipe = pipeline_from_config(config, tokenizer, template, process_index=jax.process_index(),
                                process_count=jax.process_count())
    data_iter = iter(pipe)

    # The reference is the *starting* policy: built before any restore or update.
    reference = None
    if needs_reference(config):
        with jax.set_mesh(mesh):
            reference = Reference(config, mesh, model_config, state["params"], batch_sharding)
            if reference.mode == "precompute":
                rows = config.batch_size // jax.process_count()
                train_once = synced(_pad_rows(b, rows) for b in pipeline_from_config(
                    config, tokenizer, template, one_pass=True,
                    process_index=jax.process_index(), process_count=jax.process_count()))
                to_global = functools.partial(_global_batch, sharding=batch_sharding)
                reference.precompute("train", train_once, workdir, to_global)
                if config.data.eval_sources:
                    reference.precompute("eval", eval_pipeline(config, tokenizer, template),
                                         workdir, to_global)
                reference.release_weights()

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                        async_save=config.checkpoint.async_save)
    start = ckpt.latest_step()
    if start is not None:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        state = ckpt.restore(start, abstract, data_iter)
        if jax.process_index() == 0:
            print(f"resuming from the checkpoint at step {start} in {workdir}"
                  + (" (already complete: remove the workdir to train again)"
                     if start >= config.steps else ""), flush=True)
    start = start or 0

    eval_fn = jax.jit(functools.partial(eval_step, loss_fn=loss_fn))

    writer = MetricsWriter(workdir, resume_step=start, tensorboard=config.logging.tensorboard)
    peak = config.logging.peak_flops or device_peak_flops()
    flops_per_token = train_flops_per_token(model_config, config.seq_len)
    config_dict = config.to_dict()
    last: dict = {}

    def log_eval(step):
        with jax.set_mesh(mesh):
            m = evaluate(config, state["params"], tokenizer, template, batch_sharding, eval_fn,
                         reference)
        writer.write(step, m)
        last.update(m)
        log.info("step %d: %s", step, m)

    if config.eval.at_start and start == 0 and config.data.eval_sources:
        log_eval(0)

    bar = None
    if jax.process_index() == 0 and config.logging.progress:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=start, desc="train", unit="step",
                   dynamic_ncols=True)
    t_last, tokens_since, steps_since, real_since = time.perf_counter(), 0, 0, 0
    step = start
    with _Preemption() as preempt, jax.set_mesh(mesh):
        while step < config.steps:
            local = next(data_iter, None)
            exhausted = local is None
            if config.epochs and jax.process_count() > 1:  # every process stops together
                exhausted = not all_processes(not exhausted).all()
            if exhausted:
                log.info("data exhausted after %d epochs at step %d", config.epochs, step)
                break
            batch = device_batch(local, batch_sharding, reference)
            state, metrics = step_fn(state, batch)
            step += 1
            steps_since += 1
            if bar is not None:
                bar.update(1)
            tokens_since += local["input_ids"].size * jax.process_count()
            real_since += int(np.sum(local["segment_ids"] != 0)) * jax.process_count()

            if step % config.logging.every == 0 or step == config.steps:
                metrics = jax.device_get(metrics)
                now = time.perf_counter()
                dt = (now - t_last) / steps_since
                out = {k: v for k, v in metrics.items() if k != "weight"}
                out.update(step_time=dt, tokens_per_second=tokens_since / (now - t_last),
                           packing_efficiency=real_since / tokens_since)
                if peak:
                    out["mfu"] = flops_per_token * tokens_since / (now - t_last) / (
                        peak * jax.device_count())
                writer.write(step, out)
                last.update(out)
                log.info("step %d: loss %.4f, %.0f tokens/s", step, out["loss"],
                         out["tokens_per_second"])
                if bar is not None:
                    bar.set_postfix(loss=f"{out['loss']:.4f}",
                                    tok_s=f"{out['tokens_per_second']:.0f}", refresh=False)
                t_last, tokens_since, steps_since, real_since = now, 0, 0, 0
            if config.eval.every and config.data.eval_sources and step % config.eval.every == 0:
                log_eval(step)
            if preempt.stop(step):
                ckpt.save(step, state, data_iter, config_dict, force=True)
                log.warning("checkpoint saved at step %d after SIGTERM; exiting", step)
                break
            if step % config.checkpoint.every == 0 or step == config.steps:
                ckpt.save(step, state, data_iter, config_dict)
    if step > start and ckpt.latest_step() != step:
        ckpt.save(step, state, data_iter, config_dict, force=True)
    if bar is not None:
        bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
    return last
