"""Preference losses against float64 NumPy formulas (references section 4), gradients by
finite differences, and sequence log-probs against transformers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.objectives.preference import LOSS_TYPES, dpo_loss, pair_losses, sequence_logps



def np_logsig(x):
    return -np.logaddexp(0.0, -x)


def np_sig(x):
    return 1 / (1 + np.exp(-x))


def reference_losses(loss_type, pol, ref, lengths, beta, eps, gamma):
    """The formulas written out in float64, independently of the JAX code."""
    pc, pr = pol[:, 0], pol[:, 1]
    lc, lr = lengths[:, 0], lengths[:, 1]
    if loss_type == "simpo":
        z = beta * (pc / lc - pr / lr) - gamma
        return -(1 - eps) * np_logsig(z) - eps * np_logsig(-z)
    if loss_type == "orpo":
        ac, ar = pc / lc, pr / lr
        log_odds = (ac - np.log(1 - np.exp(ac))) - (ar - np.log(1 - np.exp(ar)))
        return -beta * np_logsig(log_odds)  # dpo_loss adds the NLL (a batch token mean)
    cr, rr = pc - ref[:, 0], pr - ref[:, 1]
    d = cr - rr
    if loss_type == "sigmoid":
        return -(1 - eps) * np_logsig(beta * d) - eps * np_logsig(-beta * d)
    if loss_type == "hinge":
        return np.maximum(0, 1 - beta * d)
    if loss_type == "ipo":
        return ((cr / lc - rr / lr) - 1 / (2 * beta)) ** 2
    if loss_type == "robust":
        return (-(1 - eps) * np_logsig(beta * d) + eps * np_logsig(-beta * d)) / (1 - 2 * eps)
    if loss_type == "nca_pair":
        return -np_logsig(beta * cr) - 0.5 * np_logsig(-beta * cr) - 0.5 * np_logsig(-beta * rr)
    if loss_type == "bco_pair":
        return -np_logsig(beta * cr) - np_logsig(-beta * rr)
    if loss_type == "sppo_hard":
        return (cr - 1 / (2 * beta)) ** 2 + (rr + 1 / (2 * beta)) ** 2
    if loss_type == "apo_zero":
        return (1 - np_sig(beta * cr)) + np_sig(beta * rr)
    if loss_type == "kto_pair":  # TRL 0.8's: torch.cat of the two halves, then .mean()
        chosen_kl, rejected_kl = max(cr.mean(), 0.0), max(rr.mean(), 0.0)
        halves = np.concatenate([1 - np_sig(beta * (cr - rejected_kl)),
                                 1 - np_sig(beta * (chosen_kl - rr))])
        return halves.reshape(2, -1).mean(0)  # per pair: its two terms' mean
    raise AssertionError(loss_type)


def random_case(seed, n=16):
    rs = np.random.RandomState(seed)
    lengths = rs.randint(3, 30, (n, 2)).astype(np.float64)
    pol = -rs.uniform(0.2, 3.0, (n, 2)) * lengths  # log-probs < 0
    ref = pol + rs.normal(0, 2.0, (n, 2))
    return pol, ref, lengths


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_losses_match_float64_formulas(loss_type):
    pol, ref, lengths = random_case(0)
    beta, eps, gamma = 0.1, 0.2 if loss_type in ("sigmoid", "robust", "simpo") else 0.0, 0.5
    got, rc, rr = pair_losses(loss_type, jnp.asarray(pol, jnp.float32),
                              jnp.asarray(ref, jnp.float32), jnp.asarray(lengths, jnp.float32),
                              beta=beta, label_smoothing=eps, gamma=gamma)
    want = reference_losses(loss_type, pol, ref, lengths, beta, eps, gamma)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    if loss_type not in ("simpo", "orpo"):
        np.testing.assert_allclose(rc, beta * (pol[:, 0] - ref[:, 0]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rr, beta * (pol[:, 1] - ref[:, 1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradients_match_finite_differences(loss_type):
    pol, ref, lengths = random_case(1, n=3)
    beta, eps = 0.5, 0.1 if loss_type in ("sigmoid", "robust", "simpo") else 0.0

    def f(p):
        return pair_losses(loss_type, p, jnp.asarray(ref, jnp.float32),
                           jnp.asarray(lengths, jnp.float32), beta=beta, label_smoothing=eps,
                           gamma=0.3)[0].sum()

    grad = np.asarray(jax.grad(f)(jnp.asarray(pol, jnp.float32)), np.float64)
    h = 1e-4
    fd = np.zeros_like(pol)
    for idx in np.ndindex(*pol.shape):
        up, down = pol.copy(), pol.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (reference_losses(loss_type, up, ref, lengths, beta, eps, 0.3).sum()
                   - reference_losses(loss_type, down, ref, lengths, beta, eps, 0.3).sum()) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-4)


def test_kto_pair_batch_means_skip_padding_pairs():
    """kto_pair's KL estimates are batch means: padding pairs (real = 0) must not enter."""
    pol, ref, lengths = random_case(4, n=6)
    ref[:, 0] -= 3.0  # positive mean chosen log-ratio: the clamp at 0 is not what decides
    real = np.array([1, 1, 1, 1, 0, 0], np.float32)
    padded_pol, padded_ref = pol.copy(), ref.copy()
    padded_pol[4:], padded_ref[4:] = -1e3, 0.0  # garbage in the padding pairs
    got = pair_losses("kto_pair", jnp.asarray(padded_pol, jnp.float32),
                      jnp.asarray(padded_ref, jnp.float32), jnp.asarray(lengths, jnp.float32),
                      beta=0.1, real=jnp.asarray(real))[0]
    want = reference_losses("kto_pair", pol[:4], ref[:4], lengths[:4], 0.1, 0.0, 0.0)
    np.testing.assert_allclose(np.asarray(got)[:4], want, rtol=2e-5, atol=2e-5)


def _pair_batch(prompt, chosen, rejected, length):
    out = {k: np.zeros((1, 2, length), np.int32)
           for k in ("input_ids", "segment_ids", "positions", "loss_mask")}
    for r, resp in enumerate((chosen, rejected)):
        ids = prompt + resp
        out["input_ids"][0, r, :len(ids)] = ids
        out["segment_ids"][0, r, :len(ids)] = 1
        out["positions"][0, r, :len(ids)] = np.arange(len(ids))
        out["loss_mask"][0, r, len(prompt):len(ids)] = 1
    return out


def test_sequence_logps_match_transformers(hf_case):
    import torch
    from conftest import hf_logits
    from medjax.models import load_hf
    path, model, _ = hf_case("llama_gqa")
    config, params = load_hf(path)
    rs = np.random.RandomState(3)
    prompt = rs.randint(0, 256, 7).tolist()
    chosen, rejected = rs.randint(0, 256, 5).tolist(), rs.randint(0, 256, 9).tolist()
    batch = _pair_batch(prompt, chosen, rejected, 24)
    logps, lengths = sequence_logps(config, params, batch)
    assert lengths.tolist() == [[5, 9]]
    for r, resp in enumerate((chosen, rejected)):
        ids = np.array([prompt + resp])
        logits = torch.tensor(hf_logits(model, ids)[0]).double()
        logp = torch.log_softmax(logits, -1)
        want = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(resp))
        np.testing.assert_allclose(float(logps[0, r]), want, rtol=1e-5)


def test_policy_equal_to_reference_gives_log2_and_zero_rewards():
    from medjax.models import get_preset, init_params
    config = get_preset("llama3_tiny")
    params = init_params(config, jax.random.key(0))
    rs = np.random.RandomState(4)
    batch = _pair_batch(rs.randint(0, 512, 6).tolist(), rs.randint(0, 512, 4).tolist(),
                        rs.randint(0, 512, 7).tolist(), 20)
    batch["ref_logps"] = sequence_logps(config, params, batch)[0]
    loss, m = dpo_loss(config, params, batch)
    np.testing.assert_allclose(loss, np.log(2), rtol=1e-6)
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert abs(float(m[k])) < 1e-6


def _pairs_batch(examples, length):
    """Several (prompt, chosen, rejected) pairs -> one ``[pairs, 2, length]`` batch."""
    parts = [_pair_batch(p, c, r, length) for p, c, r in examples]
    return {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}


@pytest.mark.parametrize("loss_type,sft_weight", [("sigmoid", 0.7), ("orpo", 0.0)])
def test_nll_terms_are_trl_token_means(hf_case, loss_type, sft_weight):
    """TRL 1.x's procedure written out in float64 torch on the transformers model:
    DPO + ``loss_type="sft"`` (weight w) takes one cross-entropy mean over every chosen
    response token of the batch; ORPOTrainer one mean over every token of the chosen
    sequences, prompt included (labels = input ids, shifted). Pairs of very different
    lengths make a mean of per-pair means differ from it."""
    import torch
    import torch.nn.functional as F
    from medjax.models import load_hf
    path, model, _ = hf_case("llama_gqa")
    config, params = load_hf(path)
    rs = np.random.RandomState(7)
    examples = [(rs.randint(0, 256, p).tolist(), rs.randint(0, 256, c).tolist(),
                 rs.randint(0, 256, r).tolist()) for p, c, r in ((3, 2, 11), (12, 14, 4),
                                                               (6, 5, 8))]
    batch = _pairs_batch(examples, 32)
    beta = 0.1
    ref = np.random.RandomState(8).normal(-60, 5, (3, 2))
    if loss_type != "orpo":
        batch["ref_logps"] = jnp.asarray(ref, jnp.float32)
    got, _ = dpo_loss(config, params, batch, loss_type=loss_type, beta=beta,
                      sft_weight=sft_weight)

    model64 = model.double()
    sums, counts, chosen_ce = np.zeros((3, 2)), np.zeros((3, 2)), []
    for i, (prompt, chosen, rejected) in enumerate(examples):
        for r, resp in enumerate((chosen, rejected)):
            ids = torch.tensor([prompt + resp])
            with torch.no_grad():
                logits = model64(ids).logits[0, :-1]
            labels = ids[0, 1:]
            ce = F.cross_entropy(logits, labels, reduction="none")
            sums[i, r] = -float(ce[len(prompt) - 1:].sum())
            counts[i, r] = len(resp)
            if r == 0:
                chosen_ce.append((ce if loss_type == "orpo" else ce[len(prompt) - 1:]).numpy())
    token_mean = float(np.concatenate(chosen_ce).mean())
    if loss_type == "orpo":
        avg = sums / counts
        log_odds = ((avg[:, 0] - np.log1p(-np.exp(avg[:, 0])))
                    - (avg[:, 1] - np.log1p(-np.exp(avg[:, 1]))))
        want = token_mean - (beta * np_logsig(log_odds)).mean()
    else:
        d = (sums[:, 0] - ref[:, 0]) - (sums[:, 1] - ref[:, 1])
        want = (-np_logsig(beta * d)).mean() + sft_weight * token_mean
    np.testing.assert_allclose(float(got), want, rtol=2e-5)
    per_pair_mean = np.mean([c.mean() for c in chosen_ce])
    assert abs(per_pair_mean - token_mean) > 1e-3  # the case tells the two definitions apart


@pytest.mark.parametrize("name", ["dpo", "kto"])
def test_objective_keeps_the_softmax_within_loss_keep_gb(name):
    """``objective.loss_keep_gb`` (default 0: recompute) reaches the policy's log-probs:
    the step's program has one vocabulary-sized matmul fewer with 1 GiB than with 0, and
    the loss and gradients are the same."""
    from ml_collections import ConfigDict

    from medjax import objectives
    from medjax.models import get_preset, init_params
    config = get_preset("llama3_tiny", vocab_size=1000)
    params = init_params(config, jax.random.key(1))
    rs = np.random.RandomState(6)
    batch = {k: jnp.asarray(v) for k, v in _pairs_batch(
        [(rs.randint(0, 1000, 5).tolist(), rs.randint(0, 1000, 6).tolist(),
          rs.randint(0, 1000, 9).tolist()) for _ in range(2)], 24).items()}
    batch["ref_logps"] = jnp.asarray(rs.randn(2, 2), jnp.float32)
    if name == "kto":
        batch["label"] = jnp.asarray([1, 0], jnp.int32)
    c = ConfigDict({"objective": {}})
    objectives.get(name).add_config(c)
    assert c.objective.loss_keep_gb == 0.0
    c.objective.loss_chunk_size = 8
    results = {}
    for keep in (0.0, 1.0):
        c.objective.loss_keep_gb = keep
        loss = objectives.get(name).make_loss(c.objective, config)
        step = jax.jit(jax.value_and_grad(lambda p, b: loss(p, b)[0]))
        text = step.lower(params, batch).as_text()
        dots = sum(1 for line in text.splitlines() if "dot_general" in line and "1000" in line)
        results[keep] = dots, step(params, batch)
    assert results[1.0][0] == results[0.0][0] - 1
    (want, wg), (got, gg) = results[0.0][1], results[1.0][1]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(gg), jax.tree.leaves(wg)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
