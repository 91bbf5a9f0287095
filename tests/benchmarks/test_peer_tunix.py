"""benchmarks/peer_tunix.py: its pure parts (arguments, the ids Tunix is fed, Tunix's model
config from the HF directory's, the plan, the medjax / Tunix table), and one slow end-to-end
run on a 2-layer model in Tunix's venv (skipped when the venv is absent)."""

import importlib.util
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT

from medjax.data.messages import Encoded


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


pt = _module("benchmarks/peer_tunix.py", "peer_tunix")


class FakeTemplate:
    """Prompt: [1] + one id per word + [9]; response: one id per word + [2] (EOS);
    conversation: the two, the loss on the response."""

    @staticmethod
    def _words(text):
        return [10 + len(w) for w in text.split()]

    def encode_prompt(self, messages):
        assert messages == [{"role": "user", "content": messages[0]["content"]}]
        return [1] + self._words(messages[0]["content"]) + [9]

    def encode_response(self, text):
        return self._words(text) + [2]

    def encode_conversation(self, messages):
        p = self.encode_prompt(messages[:1])
        r = self.encode_response(messages[1]["content"])
        return Encoded(p + r, [0] * len(p) + [1] * len(r))


def test_args_defaults_and_errors():
    a = pt.parse_args([])
    assert a.jobs == ["dpo_frozen", "sft"]
    assert (a.seq_len, a.dpo_batch, a.sft_batch, a.steps, a.warmup) == (512, 8, 8, 3, 1)
    assert a.settings == ["equal"]  # what peer_trl.prepare and report read
    assert pt.parse_args(["--jobs=sft", "--seq_len=64"]).jobs == ["sft"]
    for bad in (["--jobs=dpo_precompute"], ["--seq_len=66"]):
        with pytest.raises(SystemExit):
            pt.parse_args(bad)


def test_dpo_arrays_pad_prompts_left_and_responses_right():
    recs = [{"prompt": "a bb", "chosen": "ccc", "rejected": "d ee f"},
            {"prompt": "x y z", "chosen": "long word", "rejected": "q"}]
    out = pt.dpo_arrays(recs, FakeTemplate(), prompt_len=5, response_len=4, pad_id=0)
    np.testing.assert_array_equal(out["prompt_ids"], [[0, 1, 11, 12, 9], [1, 11, 11, 11, 9]])
    np.testing.assert_array_equal(out["prompt_mask"], [[0, 1, 1, 1, 1], [1] * 5])
    np.testing.assert_array_equal(out["chosen_ids"], [[13, 2, 0, 0], [14, 14, 2, 0]])
    np.testing.assert_array_equal(out["chosen_mask"], [[1, 1, 0, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(out["rejected_ids"], [[11, 12, 11, 2], [11, 2, 0, 0]])
    np.testing.assert_array_equal(out["rejected_mask"], [[1, 1, 1, 1], [1, 1, 0, 0]])
    assert all(v.dtype == np.int32 for v in out.values())
    with pytest.raises(ValueError, match="record 1: prompt has 5 tokens, more than 4"):
        pt.dpo_arrays(recs, FakeTemplate(), prompt_len=4, response_len=4, pad_id=0)
    with pytest.raises(ValueError, match="record 0: rejected has 4 tokens, more than 3"):
        pt.dpo_arrays(recs, FakeTemplate(), prompt_len=5, response_len=3, pad_id=0)


def test_sft_arrays_loss_mask_and_padding():
    recs = [{"messages": [{"role": "user", "content": "a b"},
                          {"role": "assistant", "content": "cc"}]}]
    out = pt.sft_arrays(recs, FakeTemplate(), seq_len=7, pad_id=0)
    np.testing.assert_array_equal(out["input_tokens"], [[1, 11, 11, 9, 12, 2, 0]])
    np.testing.assert_array_equal(out["input_mask"], [[0, 0, 0, 0, 1, 1, 0]])
    with pytest.raises(ValueError, match="6 tokens, more than 5"):
        pt.sft_arrays(recs, FakeTemplate(), seq_len=5, pad_id=0)
    with pytest.raises(ValueError, match="pad id 2"):  # EOS = pad would count as padding
        pt.sft_arrays(recs, FakeTemplate(), seq_len=7, pad_id=2)


def test_batches_cycle_over_rows():
    arrays = {"a": np.arange(5) * 10, "b": np.arange(5)}
    out = pt.batches(arrays, batch=2, count=4)
    assert [list(b["b"]) for b in out] == [[0, 1], [2, 3], [4, 0], [1, 2]]
    assert [list(b["a"]) for b in out][2] == [40, 0]


def test_tunix_config_from_transformers_config():
    import transformers
    hf = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=96,
                                  num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                                  rope_theta=500000.0).to_dict()
    assert pt.tunix_config(hf) == dict(num_layers=3, vocab_size=320, embed_dim=64,
                                       hidden_dim=96, num_heads=4, head_dim=16,
                                       num_kv_heads=2, rope_theta=500000.0, norm_eps=1e-5,
                                       weight_tying=False)
    hf.pop("head_dim")
    assert pt.tunix_config(dict(hf, tie_word_embeddings=True))["weight_tying"] is True
    assert pt.tunix_config(hf)["head_dim"] == 16
    scaled = dict(hf, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5})
    for bad, msg in ((scaled, "rope"), (dict(hf, attention_bias=True), "biases"),
                     (dict(hf, model_type="mistral"), "model_type")):
        with pytest.raises(ValueError, match=msg):
            pt.tunix_config(bad)


def test_constraints_pin_torch():
    text = pt.constraints({"jax": "0.1", "flax": "0.2"})
    assert text.splitlines() == ["torch==2.13.0", "flax==0.2", "jax==0.1"]
    assert pt.constraints({}) == "torch==2.13.0\n"


def test_medjax_optimizer_reads_the_configs():
    for objective in ("dpo", "sft"):
        o = pt.medjax_optimizer(ROOT, objective)
        assert set(o) == {"lr", "b1", "b2", "eps", "weight_decay", "clip_norm"}
        assert all(isinstance(v, float) and v >= 0 for v in o.values()) and o["lr"] > 0


def _made():
    return {"model_dir": "M", "ids": "I.npz", "pad_id": 0,
            "data": {"equal": {"dpo": "dpo.jsonl", "sft": "sft.jsonl"}},
            "optimizer": {"dpo": {"lr": 1.0}, "sft": {"lr": 2.0}}}


def test_plan_alternates_frameworks_on_the_same_shape():
    args = pt.parse_args(["--dpo_batch=4", "--sft_batch=6", "--seq_len=128"])
    plan = pt.plan_jobs(args, _made(), "SRC", "abc")
    assert [(s, n) for s, n, _ in plan] == [("equal", "dpo_frozen"), ("equal", "sft")]
    for (_, name, runs), batch, data in zip(plan, (4, 6), ("dpo.jsonl", "sft.jsonl")):
        assert [fw for fw, _, _ in runs] == ["medjax", "tunix"]
        jobs = [job for _, _, job in runs]
        assert {(j["batch"], j["seq_len"], j["data"], j["model_dir"]) for j in jobs} == \
            {(batch, 128, data, "M")}
        assert "ids" not in jobs[0] and jobs[1]["ids"] == "I.npz"
        assert jobs[1]["optimizer"] == {"lr": 1.0 if name == "dpo_frozen" else 2.0}
    assert plan[0][2][0][2]["reference"] == "frozen"


def _run(step, real, positions):
    return {"step_times": [step] * 2, "real": [real] * 2, "positions": [positions] * 2,
            "sequences": [8, 8], "version": "v", "other_load": "0%", "load_end": "0",
            "load_start": "0"}


def test_report_merges_runs_into_medjax_over_tunix_ratios(capsys):
    args = pt.parse_args(["--steps=2", "--jobs=sft"])
    plan = pt.plan_jobs(args, _made(), "SRC", "abc")
    results = {("equal", "sft", "medjax", "packed"): [_run(2.0, 4096, 4096),
                                                      _run(1.0, 4096, 4096)],
               ("equal", "sft", "tunix", "one conversation a row"): [_run(8.0, 4096, 4096),
                                                                     _run(8.0, 4096, 4096)]}
    pt.peer_trl.report(args, plan, results, peer="tunix", peer_name="Tunix")
    text = capsys.readouterr().out
    assert "| sft | medjax | packed | 2 | 8.0 | 100% | 1.50 | 3,072 | 3,072 |" in text
    assert "| sft | tunix | one conversation a row | 2 | 8.0 | 100% | 8.00 | 512 | 512 |" in text
    # medians over the two repeats: (2048 + 4096) / 2 over 512; each repeat 4 and 8
    assert "sft medjax packed / Tunix one conversation a row: 6.00x (repeat by repeat: " \
           "4.00, 8.00)" in text
    assert "TRL" not in text


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "benchmarks", ".venv-tunix", "bin",
                                                    "python")),
                    reason="benchmarks/.venv-tunix absent (peer_tunix.py makes it)")
def test_peer_tunix_small(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "peer_tunix.py"), "--shape=small",
           "--steps=1", "--warmup=1", "--seq_len=64", "--dpo_batch=2", "--sft_batch=2",
           f"--workdir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "same ids in both frameworks" in text and "Tunix fed the same ids" in text
    rows = re.findall(r"^\| (dpo_frozen|sft) \| (medjax|tunix) \|.*\| 100% \|", text, re.M)
    assert sorted(rows) == [("dpo_frozen", "medjax"), ("dpo_frozen", "tunix"),
                            ("sft", "medjax"), ("sft", "tunix")]
    ratios = [float(x) for x in re.findall(r": ([\d.]+)x$", text, re.M)]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
