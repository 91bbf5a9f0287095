"""benchmarks/train_throughput.py on the tiny model: every objective's real train step on
batches of the real pipeline (--lengths=realistic), the real-token fraction it prints
against the batches' own segment_ids, and --vs's B / A table."""

import importlib.util
import os
import re
import sys

import numpy as np
import pytest
from conftest import ROOT, load_config

from medjax.data.pipeline import pipeline_from_config
from medjax.data.templates import get_template
from medjax.data.tokenizer import get_tokenizer


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # its dataclass looks itself up there
    spec.loader.exec_module(mod)
    return mod


tt = _module("benchmarks/train_throughput.py", "train_throughput")

# One row per fake device and one data shard (each shard's Grain pipeline tokenises
# hundreds of records ahead); the model: see tiny_model
TINY = {"seq_len": 48, "batch_size": 8, "data.shards": 1, "model.vocab_size": 0}
OPTS = dict(steps=1, warmup=1, lengths="realistic", length_scale=16, batches=2, records=48,
            matmul_size=128)
REAL = re.compile(r"\| real tokens \(segment_ids != 0\) \| ([\d.]+)% \(([\d,]+) of ([\d,]+) "
                  r"positions in (\d+) batch")
RATIO = r"\| {} \| [\d,.]+ \| [\d,.]+ \| ([\d.]+) \|"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """llama3_tiny with a 32,000-row vocabulary, saved with Mistral's tokenizer and
    template (a model directory, as --config.model.init_from gives one; loading it is
    quicker than compiling the random init in every test)."""
    import jax

    from medjax.models import get_preset, init_params
    from medjax.models.checkpoint import save_model
    config = get_preset("llama3_tiny").replace(vocab_size=32000)
    path = str(tmp_path_factory.mktemp("tput") / "tiny")
    save_model(config, init_params(config, jax.random.key(0)), path, tokenizer="mistral",
               template="mistral")
    return path


@pytest.fixture
def measure(capsys, tmp_path, tiny_model):
    def run(name, vs="", **overrides):
        """Runs the benchmark (A, and B with ``vs``); checks what every run printed about
        its real tokens; returns the results and the output."""
        return _measure(capsys, tmp_path, name, vs, **{"model.init_from": tiny_model,
                                                        **overrides})
    return run


def _measure(capsys, tmp_path, name, vs, **overrides):
    config = load_config(name, **{**TINY, **overrides})
    results = tt.measure(config, tt.Options(**OPTS, vs=vs), str(tmp_path))
    out = capsys.readouterr().out
    configs = [config] + ([tt.with_overrides(config, vs)] if vs else [])
    printed = REAL.findall(out)
    assert len(printed) == len(results) == len(configs)
    for c, line, r in zip(configs, printed, results):
        check_real_tokens(c, line, r)
    return results, out


def check_real_tokens(config, printed, r) -> None:
    """The real-token counts and fraction printed are those of the first batches of the
    config's pipeline, counted here from their segment_ids (both sequences of a pair)."""
    tok = get_tokenizer("mistral")  # the model's (data.tokenizer / template: auto)
    it = pipeline_from_config(config, tok, get_template("mistral", tok))
    seg = [np.asarray(next(it)["segment_ids"]) for _ in range(OPTS["batches"])]
    real, positions = sum(int((s != 0).sum()) for s in seg), sum(s.size for s in seg)
    pct, real_out, all_out, batches = printed
    assert (int(real_out.replace(",", "")), int(all_out.replace(",", ""))) == (real, positions)
    assert int(batches) == OPTS["batches"] and float(pct) == round(100 * real / positions, 2)
    assert 0 < real < positions  # the synthetic lengths leave padding (or packing gaps)
    assert tuple(r["shape"]) == seg[0].shape
    assert np.isfinite(r["loss"]) and len(r["step_times"]) == 1
    assert r["real_tokens_per_s"] == pytest.approx(r["tokens_per_s"] * real / positions)


@pytest.mark.parametrize("name, overrides, shape", [
    ("pretrain", {}, (8, 48)), ("sft", {}, (8, 48)), ("reward", {}, (8, 2, 48)),
    ("kto", {"data.pack_pairs": True}, (8, 96))],
    ids=["pretrain", "sft", "reward", "kto-packed"])
def test_objective_steps_on_pipeline_batches(measure, name, overrides, shape):
    (r,), out = measure(name, **overrides)
    assert tuple(r["shape"]) == shape
    assert re.search(r"\| real tokens/s \| [\d,]+ \|", out)
    assert re.search(r"\| MFU \(real tokens\) \| [\d.]+% of", out)
    if name == "kto":  # its frozen reference's forward, timed before each step
        assert len(r["ref_times"]) == 1 and "| reference forward, median |" in out
        assert re.search(r"\| examples / step, examples/s \| [\d.]+, [\d.]+ \|", out)


def test_dpo_vs_prints_b_over_a_ratios(measure):
    """A: precomputed reference, padded pairs; B: frozen reference, packed pairs."""
    vs = "objective.reference=frozen; data.pack_pairs=true"
    (a, b), out = measure("dpo", vs=vs, **{"objective.reference": "precompute"})
    assert tuple(a["shape"]) == (8, 2, 48) and tuple(b["shape"]) == (8, 96)
    assert "precomputed: ref_logps (zeros) in the batch, not timed" in out
    assert a["ref_times"] == [] and len(b["ref_times"]) == 1  # B's forward timed
    assert f"### B / A (dpo; {vs};" in out
    ratio = re.search(RATIO.format("real tokens/s"), out)
    assert ratio and float(ratio.group(1)) == round(
        b["real_tokens_per_s"] / a["real_tokens_per_s"], 2)
    for row in (r"step \+ reference \(s\)", r"step peak, compiled \(MiB\)", "pairs/s"):
        assert re.search(RATIO.format(row), out), row


def test_vs_values_take_the_type_of_the_field():
    c = load_config("dpo")
    b = tt.with_overrides(c, "data.pack_pairs=true; seq_len=96;optimizer.lr=1e-4; "
                             "objective.reference=frozen")
    assert (b.data.pack_pairs, b.seq_len, b.optimizer.lr, b.objective.reference) == (
        True, 96, 1e-4, "frozen")
    assert (c.data.pack_pairs, c.seq_len, c.objective.reference) == (False, 64, "precompute")
    with pytest.raises(SystemExit, match="no key 'data.pack_pair'.*data.pack_pairs"):
        tt.with_overrides(c, "data.pack_pair=true")
    with pytest.raises(SystemExit, match="expected int"):
        tt.with_overrides(c, "seq_len=long")
