"""Reward models as Hugging Face one-label sequence classifiers: export, import, and
rewards equal to transformers' AutoModelForSequenceClassification (float32)."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from conftest import BASE, HF_CASES

from medjax.models import ConfigError, head_of, load_hf, save_hf
from medjax.models.safetensors_io import SafetensorsFile
from medjax.objectives.reward import rewards
from medjax.parallel import make_mesh

TOL = 1e-4
LENGTHS = (40, 23, 31, 9)  # two pairs (chosen, rejected), right-padded to 40 tokens


def reward_model(hf_case, case, seed=0):
    """A medjax reward model: a decoder initialised by transformers (O(1) activations, see
    conftest) whose LM head is replaced by a random reward head, as training sets it up."""
    config, params = load_hf(hf_case(case)[0])
    params.pop("lm_head", None)
    params["reward_head"] = {"kernel": jax.random.normal(jax.random.key(seed),
                                                         (config.hidden_size,))}
    return config, params


def padded_batch(vocab, lengths=LENGTHS, *, avoid=None, seed=0):
    """``[pairs, 2, length]`` rows padded as the data pipeline pads them (id 0, segment 0);
    no row ends with the id ``avoid``."""
    rs = np.random.RandomState(seed)
    length = max(lengths)
    b = {k: np.zeros((len(lengths), length), np.int32)
         for k in ("input_ids", "segment_ids", "positions")}
    for r, n in enumerate(lengths):
        ids = rs.randint(0, vocab, n)
        while ids[-1] == avoid:
            ids[-1] = rs.randint(0, vocab)
        b["input_ids"][r, :n] = ids
        b["segment_ids"][r, :n] = 1
        b["positions"][r, :n] = np.arange(n)
    return {k: v.reshape(-1, 2, length) for k, v in b.items()}


def medjax_rewards(config, params, batch):
    return np.asarray(rewards(config, params, batch)).reshape(-1)


def hf_rewards(model, batch, pad_id, *, left=False):
    """logits[:, 0] of a transformers classifier on the batch's rows, padded with ``pad_id``
    on the right (or the left) and masked."""
    seg = batch["segment_ids"].reshape(-1, batch["segment_ids"].shape[-1])
    ids = batch["input_ids"].reshape(seg.shape)
    real = seg != 0
    hf_ids = np.where(real, ids, pad_id)
    if left:  # move each row's real tokens to the end
        order = np.argsort(real, axis=1, kind="stable")
        hf_ids, real = np.take_along_axis(hf_ids, order, 1), np.take_along_axis(real, order, 1)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(hf_ids, dtype=torch.long),
                    attention_mask=torch.tensor(real, dtype=torch.long))
    return out.logits[:, 0].float().numpy()


def load_classifier(path):
    return transformers.AutoModelForSequenceClassification.from_pretrained(
        path, dtype=torch.float32).eval()


@pytest.mark.parametrize("case", ["llama_gqa", "mistral_window"])
def test_exported_reward_model_scores_like_medjax(hf_case, tmp_path, case):
    config, params = reward_model(hf_case, case)
    pad = config.eos_token_id[0]  # save_hf's default
    batch = padded_batch(config.vocab_size, avoid=pad)
    want = medjax_rewards(config, params, batch)
    assert np.ptp(want) > 0.5, "rewards too alike for the comparison to mean much"

    save_hf(config, params, tmp_path / "rm")
    hf = json.loads((tmp_path / "rm" / "config.json").read_text())
    family = HF_CASES[case][0]
    assert hf["architectures"] == [f"{family}ForSequenceClassification"]
    assert (hf["num_labels"], hf["id2label"], hf["label2id"]) == (1, {"0": "LABEL_0"},
                                                                 {"LABEL_0": 0})
    assert hf["pad_token_id"] == pad
    entries = SafetensorsFile(tmp_path / "rm" / "model.safetensors").entries
    assert entries["score.weight"].shape == (1, config.hidden_size)
    assert "lm_head.weight" not in entries

    model = load_classifier(tmp_path / "rm")
    assert type(model).__name__ == f"{family}ForSequenceClassification"
    assert model.config.num_labels == 1 and model.config.pad_token_id == pad
    assert model.score.bias is None
    np.testing.assert_allclose(hf_rewards(model, batch, pad), want, atol=TOL, rtol=0)
    # Left padding gives the same rewards (RoPE is shift-invariant, pads are masked).
    np.testing.assert_allclose(hf_rewards(model, batch, pad, left=True), want, atol=TOL, rtol=0)
    # transformers finds the last token by the pad id alone: rows padded with another id
    # (0, as the data pipeline pads) are scored at their last position instead.
    wrong = hf_rewards(model, batch, 0)
    assert np.abs(wrong - want)[np.array(LENGTHS) < max(LENGTHS)].min() > 100 * TOL
    if config.sliding_window:  # the window is exercised: without it the rewards differ
        no_window = medjax_rewards(config.replace(sliding_window=None), params, batch)
        assert np.abs(no_window - want).max() > 100 * TOL


def test_pad_id_that_ends_a_row_moves_the_scored_token(hf_case, tmp_path):
    """transformers' rule (rightmost token != pad_token_id) with pad == EOS scores a row that
    ends with EOS at the token before it; medjax scores the EOS. Another pad id agrees."""
    config, params = reward_model(hf_case, "llama_gqa", seed=1)
    eos = config.eos_token_id[0]
    batch = padded_batch(config.vocab_size, avoid=eos, seed=2)
    for r, n in enumerate(LENGTHS):  # every row ends with EOS, as with the mistral template
        batch["input_ids"].reshape(len(LENGTHS), -1)[r, n - 1] = eos
    want = medjax_rewards(config, params, batch)
    save_hf(config, params, tmp_path / "eos")  # default pad id: EOS
    got = hf_rewards(load_classifier(tmp_path / "eos"), batch, eos)
    shorter = {k: v.copy() for k, v in batch.items()}
    for r, n in enumerate(LENGTHS):
        shorter["segment_ids"].reshape(len(LENGTHS), -1)[r, n - 1] = 0
    np.testing.assert_allclose(got, medjax_rewards(config, params, shorter), atol=TOL, rtol=0)
    assert np.abs(got - want).min() > 100 * TOL

    pad = 5  # ends no row (inside a row it does no harm: only the rightmost non-pad counts)
    ends = [batch["input_ids"].reshape(len(LENGTHS), -1)[r, n - 1] for r, n in enumerate(LENGTHS)]
    assert pad not in ends
    save_hf(config, params, tmp_path / "pad", pad_token_id=pad)
    got = hf_rewards(load_classifier(tmp_path / "pad"), batch, pad)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", ["llama_tied", "mistral_window"])
def test_load_hf_of_an_export_gives_the_reward_model_back(hf_case, tmp_path, case):
    config, params = reward_model(hf_case, case, seed=3)
    out = tmp_path / "rm"
    save_hf(config, params, out, max_shard_size=40_000)  # several files and an index
    assert len(list(out.glob("*.safetensors"))) > 2
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    config2, params2 = load_hf(out, mesh=mesh)
    assert config2 == config and head_of(params2) == "reward" and "lm_head" not in params2
    assert jax.tree.structure(params2) == jax.tree.structure(params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params2, params)
    kernel = params2["reward_head"]["kernel"]  # logical axis embed -> fsdp
    assert kernel.addressable_shards[0].data.shape == (config.hidden_size // 4,)
    # transformers reads it too (tied embeddings: no LM head to tie in a classifier).
    model = load_classifier(out)
    np.testing.assert_allclose(model.score.weight.detach().numpy()[0],
                               np.asarray(params["reward_head"]["kernel"]), rtol=0, atol=0)
    # bf16 export, read back in bf16 and float32.
    save_hf(config, params, tmp_path / "bf16", dtype="bfloat16")
    _, p16 = load_hf(tmp_path / "bf16", dtype="bfloat16")
    assert p16["reward_head"]["kernel"].dtype == jax.numpy.bfloat16
    np.testing.assert_allclose(np.asarray(p16["reward_head"]["kernel"], np.float32),
                               np.asarray(params["reward_head"]["kernel"]), rtol=1e-2)


@pytest.mark.parametrize("family", ["Llama", "Mistral"])
def test_load_hf_of_a_transformers_classifier(tmp_path, family):
    """A one-label classifier made by transformers itself (e.g. a TRL reward model)."""
    torch.manual_seed(4)
    kwargs = dict(BASE, num_labels=1, pad_token_id=0)
    if family == "Mistral":
        kwargs["sliding_window"] = 8
    model = getattr(transformers, f"{family}ForSequenceClassification")(
        getattr(transformers, f"{family}Config")(**kwargs)).eval()
    model.save_pretrained(tmp_path / "rm")
    config, params = load_hf(tmp_path / "rm")
    assert head_of(params) == "reward" and config.family == family.lower()
    batch = padded_batch(config.vocab_size, avoid=0, seed=5)
    want = hf_rewards(model, batch, 0)
    np.testing.assert_allclose(medjax_rewards(config, params, batch), want, atol=TOL, rtol=0)


def test_reward_export_and_import_errors(hf_case, tmp_path):
    config, params = reward_model(hf_case, "llama_gqa")
    with pytest.raises(ValueError, match="both 'lm_head' and 'reward_head'"):
        save_hf(config, {**params, "lm_head": {"kernel": params["embed"]["embedding"].T}},
                tmp_path / "both")
    with pytest.raises(ValueError, match="no EOS id.*pad_token_id"):
        save_hf(config.replace(eos_token_id=()), params, tmp_path / "nopad")
    with pytest.raises(ValueError, match="pad_token_id=256 is not a token id"):
        save_hf(config, params, tmp_path / "bad", pad_token_id=256)
    assert not (tmp_path / "nopad").exists() and not (tmp_path / "bad").exists()

    save_hf(config, params, tmp_path / "rm")
    hf = json.loads((tmp_path / "rm" / "config.json").read_text())
    for labels in ({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}},
                   {"id2label": None, "label2id": None, "num_labels": None}):
        bad = {k: v for k, v in {**hf, **labels}.items() if v is not None}
        (tmp_path / "rm" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match="'id2label'.*with 2 labels"):
            load_hf(tmp_path / "rm")
