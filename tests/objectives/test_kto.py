"""KTO against a float64 NumPy formula, its gradient, and the KL estimate across devices."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from medjax.objectives.kto import kto_losses
from medjax.parallel import make_mesh


def reference(pol, ref, label, kl_rows, beta, wd, wu):
    ratios = pol - ref
    kl = max(0.0, float((ratios[:, 1] * kl_rows).sum() / max(kl_rows.sum(), 1)))
    r = ratios[:, 0]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    return np.where(label, wd * (1 - sig(beta * (r - kl))), wu * (1 - sig(beta * (kl - r)))), kl


def case(seed, n=16):
    rs = np.random.RandomState(seed)
    pol = -rs.uniform(5, 50, (n, 2))
    ref = pol - rs.normal(0.5, 2.0, (n, 2))  # mean log-ratio > 0: the KL term is active
    label = rs.rand(n) > 0.4
    kl_rows = np.ones(n, bool)
    kl_rows[-2:] = False
    return pol, ref, label, kl_rows


def test_kto_matches_float64_formula_and_kl_is_detached():
    pol, ref, label, kl_rows = case(0)
    got, z, rewards = kto_losses(jnp.asarray(pol, jnp.float32), jnp.asarray(ref, jnp.float32),
                                 jnp.asarray(label), jnp.asarray(kl_rows), beta=0.1,
                                 desirable_weight=1.3, undesirable_weight=0.7)
    want, kl = reference(pol, ref, label, kl_rows, 0.1, 1.3, 0.7)
    assert kl > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, kl, rtol=1e-5)
    # Gradient: finite differences of the formula with the KL held fixed (detached).
    def f(p):
        return kto_losses(p, jnp.asarray(ref, jnp.float32), jnp.asarray(label),
                          jnp.asarray(kl_rows), beta=0.1)[0].sum()
    grad = np.asarray(jax.grad(f)(jnp.asarray(pol, jnp.float32)))
    assert np.all(grad[:, 1] == 0)  # mismatched rows only feed the detached KL
    h, fd = 1e-3, np.zeros(len(pol))
    for i in range(len(pol)):
        up, down = pol.copy(), pol.copy()
        up[i, 0] += h
        down[i, 0] -= h
        lu = reference(up, ref, label, kl_rows, 0.1, 1, 1)[0]
        ld = reference(down, ref, label, kl_rows, 0.1, 1, 1)[0]
        fd[i] = (lu.sum() - ld.sum()) / (2 * h)
    np.testing.assert_allclose(grad[:, 0], fd, rtol=1e-3, atol=1e-5)


def test_kl_estimate_is_the_same_on_one_and_eight_devices():
    pol, ref, label, kl_rows = case(1, n=32)
    args = [jnp.asarray(pol, jnp.float32), jnp.asarray(ref, jnp.float32), jnp.asarray(label),
            jnp.asarray(kl_rows)]
    fn = jax.jit(lambda *a: kto_losses(*a, beta=0.1)[1])
    one = fn(*[jax.device_put(a, jax.devices()[0]) for a in args])
    mesh = make_mesh(data=2, fsdp=4, tensor=1)
    sharding = NamedSharding(mesh, P(("data", "fsdp")))
    sharded = [jax.device_put(a, sharding) for a in args]
    assert len(sharded[0].addressable_shards) == 8
    with jax.set_mesh(mesh):
        eight = fn(*sharded)
    np.testing.assert_allclose(eight, one, rtol=1e-6)
    assert float(one) > 0
