"""Sharding on 8 fake CPU devices: mesh, logical rules, born-sharded params, forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_ids
from jax.sharding import NamedSharding, PartitionSpec as P

from medjax.models import forward, get_preset, init_params, load_hf
from medjax.parallel import axis_rules, logical_to_spec, make_mesh


def test_eight_fake_devices():
    assert len(jax.devices()) == 8


def test_make_mesh_sizes_and_errors():
    mesh = make_mesh(data=1, fsdp=-1, tensor=2)
    assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    with pytest.raises(ValueError, match="needs 6 devices"):
        make_mesh(data=3, fsdp=1, tensor=2)
    with pytest.raises(ValueError, match="not divisible"):
        make_mesh(data=3, fsdp=-1)
    with pytest.raises(ValueError, match="only one mesh axis"):
        make_mesh(data=-1, fsdp=-1)


def test_logical_rules_resolve_per_array():
    # Activations: batch takes (data, fsdp), so embed cannot reuse fsdp.
    assert logical_to_spec(("batch", "length", "embed")) == P(("data", "fsdp"), None, None)
    # Parameters: embed shards over fsdp, heads over tensor.
    assert logical_to_spec(("layers", "embed", "heads", "head_dim")) == P(None, "fsdp", "tensor",
                                                                          None)
    with axis_rules([("embed", None), ("heads", "tensor")]):
        assert logical_to_spec(("embed", "heads")) == P(None, "tensor")


def test_sharded_forward_equals_one_device_and_params_are_sharded():
    config = get_preset("llama3_tiny", num_kv_heads=2)
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    params_1 = init_params(config, jax.random.key(0))
    params_8 = init_params(config, jax.random.key(0), mesh=mesh)
    q = params_8["layers"]["attn"]["q_proj"]  # [layers, embed, heads, head_dim]
    assert isinstance(q.sharding, NamedSharding)
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (2, 64 // 4, 4 // 2, 16)
    assert len({d for s in q.addressable_shards for d in [s.device]}) == 8
    gate = params_8["layers"]["mlp"]["gate_proj"]
    assert gate.addressable_shards[0].data.shape == (2, 16, 64)
    # Same random init whatever the mesh.
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params_1, params_8)

    ids = random_ids(8, 32, config.vocab_size, seed=7)
    ref = np.asarray(forward(config, params_1, ids))
    with jax.set_mesh(mesh):
        fwd = jax.jit(forward, static_argnums=0)
        out = fwd(config, params_8, jnp.asarray(ids))
    # Activations follow the rules: batch over data x fsdp (4), vocab over tensor (2).
    assert out.addressable_shards[0].data.shape == (8 // 4, 32, config.vocab_size // 2)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=0)


def test_load_hf_streams_into_shards(hf_case):
    path, model, length = hf_case("llama_gqa")
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    config, params_1 = load_hf(path)
    _, params_8 = load_hf(path, mesh=mesh)
    k = params_8["layers"]["attn"]["k_proj"]
    assert k.sharding.spec == P(None, "fsdp", "tensor", None)
    assert k.addressable_shards[0].data.shape == (3, 16, 1, 16)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params_1, params_8)


def test_indivisible_sharding_is_an_error():
    config = get_preset("llama3_tiny", num_kv_heads=1, num_heads=4)
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    with pytest.raises(ValueError, match=r"k_proj.*kv_heads=1.*not divisible"):
        init_params(config, jax.random.key(0), mesh=mesh)
