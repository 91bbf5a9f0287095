"""Train step pieces: gradient accumulation, optimizer schedule and decay mask."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax.models import get_preset, init_params
from medjax.objectives import lm_loss
from medjax.training.optimizer import decay_mask, make_optimizer, make_schedule
from medjax.training.step import train_step


def _opt(**kw):
    return ml_collections.ConfigDict(dict(lr=1e-3, min_lr=1e-5, warmup_steps=2.0, b1=0.9, b2=0.95,
                                          eps=1e-8, weight_decay=0.1, decay_embeddings=False,
                                          clip_norm=1.0, grad_accum=1, **kw))


def test_gradient_accumulation_equals_whole_batch():
    config = get_preset("llama3_tiny")
    params = init_params(config, jax.random.key(0))
    rs = np.random.RandomState(0)
    # Uneven token counts per micro-batch: padding rows and a masked stretch.
    seg = np.ones((8, 16), np.int32)
    seg[1, 10:] = 0
    seg[6, 3:] = 0
    batch = {"input_ids": jnp.asarray(rs.randint(0, config.vocab_size, (8, 16))),
             "segment_ids": jnp.asarray(seg),
             "positions": jnp.broadcast_to(jnp.arange(16), (8, 16)),
             "loss_mask": jnp.asarray(rs.rand(8, 16) > 0.3)}
    loss_fn = functools.partial(lm_loss, config)
    tx = make_optimizer(_opt(), 10)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
    out = {}
    for accum in (1, 4):
        step = jax.jit(functools.partial(train_step, loss_fn=loss_fn, tx=tx,
                                         schedule=make_schedule(_opt(), 10),
                                         base_rng=jax.random.key(1), grad_accum=accum))
        out[accum] = step(state, batch)
    (s1, m1), (s4, m4) = out[1], out[4]
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
    assert m4["weight"] == m1["weight"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 s4["params"], s1["params"])


def test_schedule_warmup_cosine_floor():
    sched = make_schedule(_opt(), 100)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(sched(2), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(sched(100), 1e-5, rtol=1e-4)
    assert float(sched(50)) < 1e-3
    opt = _opt()
    opt.warmup_steps = 0.1  # a fraction of the steps
    frac = make_schedule(opt, 100)
    np.testing.assert_allclose(frac(10), 1e-3, rtol=1e-6)


def test_weight_decay_skips_norms_and_optionally_embeddings():
    params = init_params(get_preset("llama3_tiny"), jax.random.key(0))
    mask = decay_mask(params, decay_embeddings=False)
    assert mask["layers"]["attn"]["q_proj"] and mask["lm_head"]["kernel"]
    assert not mask["layers"]["attn_norm"]["scale"] and not mask["final_norm"]["scale"]
    assert not mask["embed"]["embedding"]
    assert decay_mask(params, decay_embeddings=True)["embed"]["embedding"]


def test_mixed_precision_keeps_float32_master_weights():
    """bf16 compute, float32 parameters and optimizer state; close to the float32 step."""
    config = get_preset("llama3_tiny")
    params = init_params(config, jax.random.key(0))
    ids = jnp.asarray(np.random.RandomState(2).randint(0, config.vocab_size, (4, 16)))
    tx = make_optimizer(_opt(), 10)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
    out = {}
    for dtype in ("float32", "bfloat16"):
        step = jax.jit(functools.partial(
            train_step, loss_fn=functools.partial(lm_loss, config.replace(dtype=dtype)), tx=tx,
            schedule=make_schedule(_opt(), 10), base_rng=jax.random.key(1)))
        out[dtype] = step(state, {"input_ids": ids})
    (_, m32), (s16, m16) = out["float32"], out["bfloat16"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s16["params"]))
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(s16["opt_state"]))
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=2e-2)
    assert float(m16["loss"]) != float(m32["loss"])  # the compute really ran in bf16


def test_microbatches_are_strided_and_need_no_communication():
    from jax.sharding import NamedSharding, PartitionSpec as P

    from medjax.parallel import make_mesh
    from medjax.training.step import split_microbatches
    x = np.arange(32 * 3).reshape(32, 3)
    mbs = np.asarray(split_microbatches({"x": jnp.asarray(x)}, 4)["x"])
    np.testing.assert_array_equal(mbs[1], x[1::4])  # rows 1, 5, 9, ...
    mesh = make_mesh(data=2, fsdp=4, tensor=1)
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    split = jax.jit(lambda b: split_microbatches(b, 4), in_shardings=(rows,),
                    out_shardings=NamedSharding(mesh, P(None, ("data", "fsdp"))))
    hlo = split.lower({"x": jax.ShapeDtypeStruct((32, 3), jnp.int32)}).compile().as_text()
    for op in ("all-to-all", "all-gather", "collective-permute", "all-reduce"):
        assert op not in hlo, op  # each device keeps its own rows
