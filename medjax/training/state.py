"""Set-up of a run: mesh, the starting model, the tokenizer, the sharded train state and the
jitted steps (``setup``), and the same state abstractly (``abstract_train_state``, used
by ``benchmarks/memory_plan.py``)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .. import models, objectives
from ..data.templates import get_template
from ..data.tokenizer import get_tokenizer
from ..parallel import logical_to_spec, make_mesh
from .optimizer import make_optimizer, make_schedule
from .step import eval_step, train_step

log = logging.getLogger(__name__)


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
    lays out the real state (the objective's head)."""
    head = objectives.get(config.objective.name).head
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
                 loss_fn: Callable | None = None,
                 tx: optax.GradientTransformation | None = None) -> Callable:
    """``train_step`` for ``config`` (its objective, optimizer, schedule, seed and
    ``optimizer.grad_accum``), jitted with in/out shardings and the state donated.
    ``setup`` and ``benchmarks/memory_plan.py`` compile this same function."""
    if loss_fn is None:
        loss_fn = objectives.get(config.objective.name).make_loss(config.objective,
                                                                  model_config)
    return jax.jit(
        functools.partial(train_step, loss_fn=loss_fn,
                          tx=tx or make_optimizer(config.optimizer, config.steps),
                          schedule=make_schedule(config.optimizer, config.steps),
                          base_rng=jax.random.key(config.seed + 1),
                          grad_accum=config.optimizer.grad_accum),
        in_shardings=(state_sharding, batch_sharding_for(mesh)),
        out_shardings=(state_sharding, None), donate_argnums=0)


@dataclasses.dataclass
class Setup:
    mesh: Mesh
    unit: objectives.Objective
    model: models.Model  # the starting model (params=None: they are state["params"])
    state: dict
    state_sharding: dict
    batch_sharding: NamedSharding
    loss_fn: Callable
    step_fn: Callable  # jitted train_step(state, batch) -> (state, metrics), state donated
    eval_fn: Callable  # jitted eval_step(params, batch) -> metrics
    tokenizer: object = None  # None when setup() was given a vocabulary size instead
    tokenizer_spec: str = ""  # the tokenizer's name or directory
    template: object = None  # None for objectives without a chat template

    @property
    def model_config(self) -> models.ModelConfig:
        return self.model.config


def build_mesh(config) -> Mesh:
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % n_batch_shards or config.batch_size % jax.process_count():
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the data x fsdp "
                         f"mesh size {n_batch_shards} and process count {jax.process_count()}")
    accum = config.optimizer.grad_accum
    if config.batch_size % accum:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by "
                         f"optimizer.grad_accum={accum}")
    return mesh


def starting_model(config, unit, mesh: Mesh) -> models.Model:
    """``model.init_from`` (anything ``models.load`` reads) or a random preset, born sharded,
    with the head ``unit`` trains (a new scalar head replaces the LM head of a reward run)."""
    m = config.model
    overrides = dict(param_dtype=m.param_dtype, dtype=m.dtype, remat_policy=m.remat_policy,
                     scan_layers=m.scan_layers, attention=m.attention)
    if m.init_from:
        model = models.load(m.init_from, mesh=mesh, **overrides)
    else:
        cfg = models.get_preset(m.preset, **overrides)
        if m.vocab_size:
            cfg = cfg.replace(vocab_size=m.vocab_size)
        model = models.Model(cfg, models.init_params(cfg, jax.random.key(config.seed),
                                                     mesh=mesh), "lm", None, None,
                             {"source": "preset", "config": cfg.to_dict(), "seed": config.seed})
    if model.head != unit.head:
        if unit.init_head is None:
            raise ValueError(f"model.init_from={m.init_from!r} is a {model.head} model (a "
                             f"{model.head} head, no {unit.head} head): it cannot start a "
                             f"'{unit.name}' run")
        head_sharding = NamedSharding(mesh, logical_to_spec(("embed",)))
        params = {k: v for k, v in model.params.items() if k != "lm_head"}
        params[f"{unit.head}_head"] = jax.jit(
            functools.partial(unit.init_head, model.config),
            out_shardings={"kernel": head_sharding})(jax.random.key(config.seed + 2))
        model = dataclasses.replace(model, params=params, head=unit.head)
    return model


def data_tools(config) -> tuple[str, object, object]:
    """(tokenizer spec, tokenizer, chat template or None) for ``config``. ``data.tokenizer``
    ``auto`` follows the model: the tokenizer ``model.init_from`` has or was trained with,
    else its family's (llama3 / mistral); ``data.template`` ``auto`` likewise takes the
    template the model was trained with, else the tokenizer's own or its family's."""
    about = models.describe(config.model.init_from) if config.model.init_from else None
    spec = config.data.tokenizer
    if spec in ("auto", ""):
        family = (about["config"] if about else models.get_preset(config.model.preset)).family
        spec = (about or {}).get("tokenizer") or ("mistral" if family == "mistral"
                                                  else "llama3")
    tokenizer = get_tokenizer(spec)
    template = None
    if objectives.get(config.objective.name).uses_template:
        name = config.data.template
        if name == "auto" and about and about["template"]:
            name = about["template"]
        template = get_template(name, tokenizer)
    return spec, tokenizer, template


def check_vocab(tokenizer_spec: str, vocab_size: int, model: models.Model, config) -> None:
    """A tokenizer with ids at or beyond the model's embedding rows is refused."""
    if vocab_size > model.config.vocab_size:
        where = (f"model.init_from={config.model.init_from!r}" if config.model.init_from
                 else f"model.preset={config.model.preset!r}")
        raise ValueError(f"data.tokenizer={tokenizer_spec!r} has ids up to {vocab_size - 1}, but "
                         f"the model ({where}) has vocab_size {model.config.vocab_size}: set "
                         "data.tokenizer to the model's tokenizer"
                         + ("" if config.model.init_from else " or model.vocab_size"))


def setup(config, vocab_size: int | None = None) -> Setup:
    """Mesh, starting model, tokenizer and template, sharded train state and the jitted
    steps for ``config``. ``vocab_size``: the caller brings its own tokenizer of that size
    (none is loaded)."""
    unit = objectives.get(config.objective.name)
    mesh = build_mesh(config)
    with jax.set_mesh(mesh):
        model = starting_model(config, unit, mesh)
    spec, tokenizer, template = config.data.tokenizer, None, None
    if vocab_size is None:
        spec, tokenizer, template = data_tools(config)
        vocab_size = tokenizer.vocab_size
    check_vocab(spec, vocab_size, model, config)

    loss_fn = unit.make_loss(config.objective, model.config)
    tx = make_optimizer(config.optimizer, config.steps)
    # Optimizer moments follow their parameters' shardings (jit(tx.init) alone would
    # replicate them: zeros carry no sharding); scalars are replicated.
    replicated = NamedSharding(mesh, P())
    params = model.params
    params_sharding = jax.tree.map(
        lambda x: x.sharding if isinstance(x.sharding, NamedSharding) else replicated, params)
    state_sharding = state_shardings(mesh, tx, params_sharding, jax.eval_shape(tx.init, params))
    state = {"step": jnp.zeros((), jnp.int32), "params": params,
             "opt_state": jax.jit(tx.init, out_shardings=state_sharding["opt_state"])(params)}
    state = jax.device_put(state, state_sharding)
    step_fn = make_step_fn(config, model.config, mesh, state_sharding, loss_fn, tx)
    eval_fn = jax.jit(functools.partial(eval_step, loss_fn=loss_fn))
    model = dataclasses.replace(model, params=None)  # they are the state's (donated) now
    return Setup(mesh, unit, model, state, state_sharding, batch_sharding_for(mesh), loss_fn,
                 step_fn, eval_fn, tokenizer, spec, template)
