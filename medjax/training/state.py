"""Set-up of a run: mesh, the starting model, the tokenizer, the sharded train state and the
jitted steps (``setup``), and the same state abstractly (``abstract_train_state`` and, for
LoRA, ``abstract_frozen_base``, used by ``benchmarks/memory_plan.py``)."""

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
from ..models import lora as lora_lib
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
    lays out the real state (the objective's head).

    With LoRA (``model_config.lora``, or ``model.lora.rank`` > 0 in ``config``) the state's
    params are the trainable tree, as ``lora_start`` makes it: the adapters (float32) and
    a reward run's new head; the frozen base is ``abstract_frozen_base``."""
    head = objectives.get(config.objective.name).head
    lora = _lora_of(config, model_config)
    if lora is None:
        params = models.abstract_params(model_config, head)
        params_sharding = models.param_shardings(model_config, mesh, head)
    else:
        config_l = model_config.replace(lora=lora)
        params = {"layers": lora_lib.abstract_adapters(config_l)["layers"]}
        params_sharding = {"layers": lora_lib.adapter_shardings(config_l, mesh)["layers"]}
        _, _, extra, extra_sharding = _split_base(config, model_config, mesh)
        params.update(extra)
        params_sharding.update(extra_sharding)
    tx = make_optimizer(config.optimizer, config.steps)
    shape = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params,
             "opt_state": jax.eval_shape(tx.init, params)}
    sharding = state_shardings(mesh, tx, params_sharding, shape["opt_state"])
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         shape, sharding)
    return state, sharding


def abstract_frozen_base(config, model_config, mesh: Mesh) -> tuple[dict, dict]:
    """(base, base_sharding) of a LoRA run without allocating anything: the frozen base
    parameters (``model.param_dtype``, e.g. bf16) that ``setup`` binds to every step, as
    ShapeDtypeStructs carrying their shardings; a reward run's new head is not in it (it
    trains, ``abstract_train_state``)."""
    base, base_sharding, _, _ = _split_base(config, model_config, mesh)
    return base, base_sharding


def _lora_of(config, model_config):
    return model_config.lora or moe_targets(
        model_config, lora_lib.from_settings(config.model.get("lora")))


def moe_targets(model_config, wanted):
    """``wanted`` (LoRA settings or None) for ``model_config``: a mixture-of-experts model's
    experts take no adapters, so ``targets=all`` means q, k, v, o there; MLP targets named
    one by one are an error."""
    if wanted is None or not model_config.num_experts:
        return wanted
    mlp = [t for t in wanted.targets if lora_lib.PROJECTIONS[t][0] == "mlp"]
    if mlp and wanted.targets != lora_lib.ALL:
        raise ValueError(f"model.lora.targets: {','.join(mlp)} on a mixture-of-experts "
                         "model: its experts take no adapters (use q,k,v,o)")
    if mlp:
        log.info("model.lora.targets=all on a mixture-of-experts model: q, k, v, o "
                 "(the experts and the router stay frozen)")
        wanted = dataclasses.replace(wanted, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    return wanted


def _split_base(config, model_config, mesh):
    """(base, base_sharding, trainable extras, their shardings) as ``lora_start`` splits
    the starting model: the reward head moves to the trainable tree, in float32."""
    head = objectives.get(config.objective.name).head
    base_cfg = model_config.replace(lora=None)
    sharding = models.param_shardings(base_cfg, mesh, head)
    base = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        models.abstract_params(base_cfg, head), sharding)
    base, sharding = dict(base), dict(sharding)
    extra, extra_sharding = {}, {}
    if "reward_head" in base:
        extra["reward_head"] = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding),
            base.pop("reward_head"))
        extra_sharding["reward_head"] = sharding.pop("reward_head")
    return base, sharding, extra, extra_sharding


def make_step_fn(config, model_config, mesh: Mesh, state_sharding: dict,
                 loss_fn: Callable | None = None,
                 tx: optax.GradientTransformation | None = None,
                 frozen_sharding=None) -> Callable:
    """``train_step`` for ``config`` (its objective, optimizer, schedule, seed and
    ``optimizer.grad_accum``), jitted with in/out shardings and the state donated.
    ``setup`` and ``benchmarks/memory_plan.py`` compile this same function.

    With LoRA (``model_config.lora``) the state's params are the trainable tree and the
    function is ``step(state, batch, frozen)``: the frozen base is an argument, neither
    differentiated nor donated."""
    if loss_fn is None:
        loss_fn = objectives.get(config.objective.name).make_loss(config.objective,
                                                                  model_config)
    step = functools.partial(train_step, loss_fn=loss_fn,
                             tx=tx or make_optimizer(config.optimizer, config.steps),
                             schedule=make_schedule(config.optimizer, config.steps),
                             base_rng=jax.random.key(config.seed + 1),
                             grad_accum=config.optimizer.grad_accum)
    if model_config.lora is None:
        return jax.jit(step, in_shardings=(state_sharding, batch_sharding_for(mesh)),
                       out_shardings=(state_sharding, None), donate_argnums=0)
    dropout = model_config.lora.dropout > 0

    def lora_step(state, batch, frozen):
        def lf(trainable, b, rng):  # adapter dropout keyed by the step's rng
            drop = jax.random.fold_in(rng, 0x10AA) if dropout else None
            return loss_fn(lora_lib.attach(frozen, trainable, drop), b, rng)
        return step(state, batch, loss_fn=lf)

    return jax.jit(lora_step,
                   in_shardings=(state_sharding, batch_sharding_for(mesh), frozen_sharding),
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
    frozen: dict | None = None  # LoRA: the frozen base (state["params"] are the adapters)

    @property
    def model_config(self) -> models.ModelConfig:
        return self.model.config

    def model_params(self, params: dict) -> dict:
        """The parameters the decoder runs for the state's ``params`` (with LoRA, the
        adapters laid over the frozen base)."""
        return params if self.frozen is None else lora_lib.attach(self.frozen, params)


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
                     scan_layers=m.scan_layers, attention=m.attention,
                     moe_impl=m.get("moe_impl", "grouped"))
    if m.init_from and models.source_kind(m.init_from) == "peft":  # its base (lora_start
        from ..models.load import peft_base                          # adds the adapters)
        lora = m.get("lora")
        model = models.load(peft_base(m.init_from, lora.get("base", "") if lora else ""),
                            mesh=mesh, **overrides)
    elif m.init_from:
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


def lora_start(config, model: models.Model, mesh: Mesh) -> tuple[models.Model, dict | None]:
    """(model, trainable) of a LoRA run: the model's config carries the LoRA settings and
    its params are the frozen base; the trainable tree holds the adapters (new ones, or a
    PEFT directory's in ``model.init_from``) and any new head. (model, None) without LoRA."""
    m = config.model
    wanted = lora_lib.from_settings(m.get("lora"))
    peft = bool(m.init_from) and models.source_kind(m.init_from) == "peft"
    if wanted is None and not peft:
        return model, None
    if peft:
        spec, _ = lora_lib.read_peft_config(m.init_from)
        if wanted is not None and (wanted.rank, wanted.targets) != (spec.rank, spec.targets):
            raise ValueError(f"model.lora (rank {wanted.rank}, targets "
                             f"{','.join(wanted.targets)}) differs from the adapter in "
                             f"model.init_from={m.init_from!r} (r {spec.rank}, targets "
                             f"{','.join(spec.targets)}): set model.lora.rank=0 to continue it "
                             "as it is")
        spec = dataclasses.replace(spec, dropout=wanted.dropout) if wanted else spec
        config_l = model.config.replace(lora=spec)
        adapters = lora_lib.load_peft(m.init_from, config_l, mesh)
    else:
        wanted = moe_targets(model.config, wanted)  # experts take no adapters
        config_l = model.config.replace(lora=wanted)
        adapters = lora_lib.init_adapters(config_l, jax.random.key(config.seed + 3), mesh)
    base = dict(model.params)
    trainable = {"layers": adapters["layers"]}
    if "reward_head" in base:  # a reward model's head trains with the adapters, in f32
        trainable["reward_head"] = jax.tree.map(lambda x: x.astype(jnp.float32),
                                                base.pop("reward_head"))
    return dataclasses.replace(model, config=config_l, params=base), trainable


def data_tools(config) -> tuple[str, object, object]:
    """(tokenizer spec, tokenizer, chat template or None) for ``config``. ``data.tokenizer``
    ``auto`` follows the model: the tokenizer ``model.init_from`` has or was trained with,
    else its family's (llama3 / mistral); ``data.template`` ``auto`` likewise takes the
    template the model was trained with, else the tokenizer's own or its family's."""
    about = models.describe(config.model.init_from) if config.model.init_from else None
    spec = config.data.tokenizer
    if spec in ("auto", ""):
        family = (about["config"] if about else models.get_preset(config.model.preset)).family
        spec = (about or {}).get("tokenizer") or ("mistral" if family in ("mistral", "mixtral")
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
        model, trainable = lora_start(config, model, mesh)
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
    frozen = None if trainable is None else model.params
    params = model.params if trainable is None else trainable
    params_sharding = jax.tree.map(
        lambda x: x.sharding if isinstance(x.sharding, NamedSharding) else replicated, params)
    state_sharding = state_shardings(mesh, tx, params_sharding, jax.eval_shape(tx.init, params))
    state = {"step": jnp.zeros((), jnp.int32), "params": params,
             "opt_state": jax.jit(tx.init, out_shardings=state_sharding["opt_state"])(params)}
    state = jax.device_put(state, state_sharding)
    eval_fn = jax.jit(functools.partial(eval_step, loss_fn=loss_fn))
    if frozen is None:
        step_fn = make_step_fn(config, model.config, mesh, state_sharding, loss_fn, tx)
    else:  # the frozen base is an argument of every step, bound here
        frozen_sharding = jax.tree.map(lambda x: x.sharding, frozen)
        lora_step = make_step_fn(config, model.config, mesh, state_sharding, loss_fn, tx,
                                 frozen_sharding=frozen_sharding)
        lora_eval = jax.jit(lambda p, b, f: eval_step(lora_lib.attach(f, p), b,
                                                      loss_fn=loss_fn))
        step_fn = functools.partial(_bind_frozen, lora_step, frozen)
        eval_fn = functools.partial(_bind_frozen, lora_eval, frozen)
    model = dataclasses.replace(model, params=None)  # they are the state's (donated) now
    return Setup(mesh, unit, model, state, state_sharding, batch_sharding_for(mesh), loss_fn,
                 step_fn, eval_fn, tokenizer, spec, template, frozen)


def _bind_frozen(fn, frozen, state_or_params, batch):
    return fn(state_or_params, batch, frozen)
