"""Online preference learning (medjax/online.py): pairing rules, prompt reading, the
reward scoring against transformers' *ForSequenceClassification, the whole loop on tiny
local models, and exact resumption after kill -9."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, tiny_llama3_dir

from medjax import online


# --------------------------------------------------------------------------- pure parts


def test_make_pair_best_vs_worst_drops_ties_and_unscored():
    rng = np.random.RandomState(0)
    assert online.make_pair([0.1, 0.9, -0.3, 0.5], "best_vs_worst", rng) == (1, 2)
    assert online.make_pair([0.2, 0.2, 0.2], "best_vs_worst", rng) is None  # a tie
    assert online.make_pair([None, 0.4, None, -1.0], "best_vs_worst", rng) == (1, 3)
    assert online.make_pair([None, 0.4], "best_vs_worst", rng) is None  # one scored
    # equal bests: the first is chosen
    assert online.make_pair([0.7, 0.7, 0.1], "best_vs_worst", rng) == (0, 2)


def test_make_pair_best_vs_random_draws_uniformly_among_the_others():
    rng = np.random.RandomState(1)
    rewards = [0.0, 3.0, 1.0, 2.0]
    drawn = [online.make_pair(rewards, "best_vs_random", rng)[1] for _ in range(3000)]
    counts = np.bincount(drawn, minlength=4)
    assert counts[1] == 0 and all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts[[0, 2, 3]])
    # the other drawn may tie with the best: dropped
    assert all(online.make_pair([1.0, 1.0], "best_vs_random", rng) is None for _ in range(5))


def test_pair_records_for_dpo_and_kto():
    scored = [{"prompt_index": 0, "where": "f:1", "prompt": [{"role": "user", "content": "q"}],
               "responses": [{"text": "a", "reward": 0.5}, {"text": "b", "reward": -1.0},
                             {"text": "c", "reward": 2.0}]},
              {"prompt_index": 1, "where": "f:2", "prompt": [{"role": "user", "content": "r"}],
               "responses": [{"text": "x", "reward": 1.0}, {"text": "y", "reward": 1.0}]},
              {"prompt_index": 2, "where": "f:3", "prompt": [{"role": "user", "content": "s"}],
               "responses": [{"text": "same ", "reward": 1.0}, {"text": "same", "reward": 0.0}]}]
    records, stats = online.pair(scored, "best_vs_worst", 0, kto=False)
    assert [(r["chosen"], r["rejected"]) for r in records] == [("c", "b")]
    assert stats == {"pairs": 1, "dropped": 2, "reward_gap": 3.0}
    records, _ = online.pair(scored, "best_vs_worst", 0, kto=True)
    assert [(r["completion"], r["label"]) for r in records] == [("c", True), ("b", False)]
    # the records are what the preference / KTO formats read
    from medjax.data.formats import parse
    parse(online.pair(scored, "best_vs_worst", 0, kto=False)[0][0], "preference")
    parse(records[0], "kto")


def test_score_applies_the_missing_end_of_turn_penalty_and_skips_refused_responses():
    class Scorer:  # the reward model's part is tested against transformers below
        def encode(self, messages, text):
            return None if not text.strip() else [len(text)]

        def score(self, rows):
            return np.array([float(r[0]) for r in rows], np.float32)

    rows = [{"prompt_index": 0, "prompt": [], "responses": [
        {"text": "abc", "finish_reason": "stop"}, {"text": "abcdef", "finish_reason": "length"},
        {"text": " ", "finish_reason": "stop"}]}]
    scored, phase = online.score(Scorer(), rows, penalty=2.5)
    got = [(r["reward_raw"], r["reward"]) for r in scored[0]["responses"]]
    assert got == [(3.0, 3.0), (6.0, 3.5), (None, None)] and phase["tokens"] == 2
    assert "reward" not in rows[0]["responses"][0]  # the sampled rows are left as they were


def test_round_prompts_cycle_through_one_shuffle():
    prompts = [online.Prompt(i, f"f:{i}", []) for i in range(10)]
    assert online.round_prompts(prompts, 2, 0, seed=0) == prompts
    rounds = [[p.index for p in online.round_prompts(prompts, r, 4, seed=0)] for r in range(3)]
    flat = rounds[0] + rounds[1] + rounds[2][:2]  # the first 10 drawn are all prompts
    assert sorted(flat) == list(range(10)) and rounds[2][2:] == rounds[0][:2]


def test_round_reference():
    assert online.round_reference("precompute", "initial", 0, "/init") == "precompute"
    assert online.round_reference("precompute", "initial", 2, "/init") == "precompute:/init"
    assert online.round_reference("frozen", "initial", 1, "/init") == "/init"
    assert online.round_reference("precompute", "refresh", 1, "/init") == "precompute"


def test_read_prompts_of_every_layout(tmp_path):
    files = {
        "a.jsonl": [{"prompt": "What is X?"},
                    {"prompt": [{"role": "system", "content": "S"},
                                {"role": "user", "content": "Q?"}]}],
        "b.jsonl": [{"prompt": "P", "chosen": "c", "rejected": "r"},
                    {"messages": [{"role": "user", "content": "U1"},
                                  {"role": "assistant", "content": "A1"},
                                  {"role": "user", "content": "U2"},
                                  {"role": "assistant", "content": "A2"}]},
                    {"conversations": [{"from": "human", "value": "H"},
                                       {"from": "gpt", "value": "G"}]}],
    }
    for name, rows in files.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = online.read_prompts(f"{tmp_path}/a.jsonl,{tmp_path}/b.jsonl")
    assert [p.messages[-1]["content"] for p in got] == ["What is X?", "Q?", "P", "U2", "H"]
    assert got[3].messages[-2] == {"role": "assistant", "content": "A1"}
    assert got[3].where.endswith("b.jsonl:2") and [p.index for p in got] == [0, 1, 2, 3, 4]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*field"):
        online.read_prompts(str(tmp_path / "bad.jsonl"))


def test_complete_chunks_cuts_a_torn_chunk(tmp_path):
    path = str(tmp_path / "s.jsonl")
    rows = [{"chunk": 0, "i": 0}, {"chunk": 0, "i": 1}, {"chunk": 1, "i": 2}]
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows) + '{"chunk": 1, "i"')
    assert online.complete_chunks(path, [2, 2, 1]) == rows[:2]
    assert [json.loads(x) for x in open(path)] == rows[:2]  # the file is cut to match


# --------------------------------------------------------------------------- models


def _reward_dir(path, policy_dir):
    """An HF LlamaForSequenceClassification (num_labels 1) with the policy's tokenizer."""
    import torch
    import transformers
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=128256, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=2048,
                                   num_labels=1, pad_token_id=128004)
    model = transformers.LlamaForSequenceClassification(cfg)
    with torch.no_grad():  # a score head large enough that rewards differ visibly
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(policy_dir).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    policy = tiny_llama3_dir(root / "policy")
    return policy, _reward_dir(root / "rm", policy)


def test_rewards_equal_transformers_sequence_classifier(models_dir):
    """The scoring phase against transformers' own reward model forward, on the texts its
    tokenizer's chat template makes."""
    import torch
    import transformers
    from conftest import load_config
    _, rm_dir = models_dir
    config = load_config("online_dpo")
    config.online.reward_model = rm_dir
    config.online.reward_batch = 4
    from medjax.training.state import build_mesh
    rm = online.RewardModel(config, build_mesh(config))
    prompt = [{"role": "user", "content": "Which drug is first-line for BPH?"}]
    texts = ["Tamsulosin.", "Omeprazole is a first-line choice, twice daily.", "No."]
    ours = rm.score([rm.encode(prompt, t) for t in texts])
    tok = transformers.AutoTokenizer.from_pretrained(rm_dir)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    for text, got in zip(texts, ours):
        ids = tok.apply_chat_template(prompt + [{"role": "assistant", "content": text}],
                                      tokenize=True, return_dict=False)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        assert rm.encode(prompt, text) == list(ids)  # the same tokens
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0, 0].item()
        assert abs(got - want) < 1e-4 * max(1.0, abs(want)), (text, got, want)
    assert rm.encode(prompt, "") is None  # an empty response is left unscored


def _online_args(policy, rm, workdir, **extra):
    args = [sys.executable, "-m", "medjax.train", "--config=configs/online_dpo.py",
            f"--workdir={workdir}", f"--config.model.init_from={policy}",
            f"--config.online.reward_model={rm}", "--config.online.rounds=2",
            "--config.online.prompts_per_round=6", "--config.online.samples_per_prompt=4",
            "--config.online.sample_batch=3", "--config.online.max_new_tokens=6",
            "--config.online.eval_samples_per_prompt=1", "--config.online.steps_per_round=2",
            "--config.batch_size=2", "--config.seq_len=64", "--config.logging.progress=false",
            "--config.checkpoint.every=1", "--config.data.max_prompt_length=48"]
    return args + [f"--config.{k}={v}" for k, v in extra.items()]


# One CPU device, as shipped (conftest's 8 fake devices are for the sharding tests)
ENV = dict({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, JAX_PLATFORMS="cpu")


def _held_out(tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in
                            ("What treats gout?", "Name a loop diuretic.")))
    return str(path)


def test_online_rounds_end_to_end(models_dir, tmp_path):
    """Two rounds on tiny local models: every per-round file and figure is there, the
    pairs are best vs worst of the scored samples, the reference of round 1 is the initial
    policy's (precomputed from it), and round 1 samples from round 0's trained policy."""
    policy, rm = models_dir
    workdir = tmp_path / "run"
    out = subprocess.run(_online_args(policy, rm, workdir, **{
        "online.eval_prompts": _held_out(tmp_path)}), cwd=ROOT, env=ENV,
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rounds = [json.loads(x) for x in open(workdir / "rounds.jsonl")]
    assert [r["round"] for r in rounds] == [0, 1]
    for r, summary in enumerate(rounds):
        rdir = workdir / f"round_{r}"
        scored = [json.loads(x) for x in open(rdir / "scored.jsonl")]
        assert len(scored) == 6 and all(len(s["responses"]) == 4 for s in scored)
        pairs = [json.loads(x) for x in open(rdir / "pairs.jsonl")]
        for p in pairs:  # best vs worst of its prompt's samples
            rewards = [x["reward"] for s in scored if s["prompt_index"] == p["prompt_index"]
                       for x in s["responses"] if x["reward"] is not None]
            assert p["reward_chosen"] == max(rewards) and p["reward_rejected"] == min(rewards)
        assert summary["pairs"] == len(pairs) and summary["pairs"] + summary["dropped"] == 6
        every = [x["reward"] for s in scored for x in s["responses"] if x["reward"] is not None]
        assert abs(summary["reward_mean"] - np.mean(every)) < 1e-6
        assert os.path.exists(rdir / "train" / "metrics.jsonl")
        assert summary["heldout_after"] is not None and "rewards/accuracies" in str(
            summary["train"])
    # round 1 trains against the initial policy's precomputed log-probs
    saved = np.load(workdir / "round_1" / "train" / "reference_logps_train.npz")
    assert f"precompute:{policy}" in str(saved["fingerprint"])
    metrics = [json.loads(x) for x in open(workdir / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert "heldout/reward_mean" in metrics[0] and "samples/reward_mean" in metrics[1]
    assert "round 1 done" in out.stdout


_KILLER = """
import os, signal, sys
import medjax.online as online
calls = []
def _chunk_done(chunk):
    calls.append(chunk)
    if len(calls) == int(os.environ["KILL_AFTER_CHUNKS"]):
        os.kill(os.getpid(), signal.SIGKILL)
online._chunk_done = _chunk_done
from absl import app
import medjax.train as t
sys.argv = [sys.argv[0]] + sys.argv[1:]
app.run(t.main, flags_parser=t._parse_or_exit)
"""


@pytest.mark.slow
def test_kill_9_mid_sampling_resumes_exactly(models_dir, tmp_path):
    """kill -9 after the first sampled chunk of round 1: the same command finishes with the
    same samples, pairs and final weights as a run never interrupted."""
    policy, rm = models_dir
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    out = subprocess.run(_online_args(policy, rm, whole), cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    args = _online_args(policy, rm, killed)
    # round 0 has 2 chunks (6 prompts, 3 a chunk): the third call is round 1's first chunk
    env = dict(ENV, KILL_AFTER_CHUNKS="3")
    out = subprocess.run([sys.executable, "-c", _KILLER] + args[3:], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    assert len(open(killed / "round_1" / "samples.jsonl").readlines()) == 3
    with open(killed / "round_1" / "samples.jsonl", "a") as f:
        f.write('{"chunk": 1, "torn')  # as if killed while writing the next chunk
    out = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("round_0/samples.jsonl", "round_1/samples.jsonl", "round_1/scored.jsonl",
                 "round_1/pairs.jsonl"):
        assert open(whole / name).read() == open(killed / name).read(), name
    from medjax.models import load
    a, b = load(str(whole / "round_1" / "train")), load(str(killed / "round_1" / "train"))
    import jax
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_cpu_demonstration_reward_rises(tmp_path):
    """The README's three commands (bundled data, SFT policy, reward model from
    configs/reward.py, 3 online rounds): the held-out prompts' mean reward after the last
    round is well above the initial policy's, and the mean reward of each round's fresh
    samples rises round after round."""
    quiet = ["--config.logging.progress=false"]
    for config, workdir, extra in (
            ("configs/sft.py", "sft", []), ("configs/reward.py", "rm", []),
            ("configs/online_dpo.py", "online",
             [f"--config.model.init_from={tmp_path / 'sft'}",
              f"--config.online.reward_model={tmp_path / 'rm'}"])):
        out = subprocess.run([sys.executable, "-m", "medjax.train", f"--config={config}",
                              f"--workdir={tmp_path / workdir}", *quiet, *extra], cwd=ROOT,
                             env=ENV, capture_output=True, text=True, timeout=3600)
        assert out.returncode == 0, (config, out.stderr[-3000:])
    rounds = [json.loads(x) for x in open(tmp_path / "online" / "rounds.jsonl")]
    assert len(rounds) == 3
    initial, final = rounds[0]["heldout_before"], rounds[-1]["heldout_after"]
    assert final > initial + 1.0, [(r["heldout_before"], r["heldout_after"]) for r in rounds]
    assert all(r["heldout_after"] > initial for r in rounds)
    sampled = [r["reward_mean"] for r in rounds]
    assert sampled == sorted(sampled) and sampled[-1] > sampled[0] + 0.5, sampled


def test_prompts_too_long_are_left_out_and_a_refused_one_names_its_line():
    from medjax.data.sources import DataError
    from medjax.data.templates import get_template
    from medjax.data.tokenizer import get_tokenizer
    template = get_template("alpaca", get_tokenizer("llama3"))  # single-turn prompts only
    prompts = [online.Prompt(0, "f.jsonl:1", [{"role": "user", "content": "short"}]),
               online.Prompt(1, "f.jsonl:2", [{"role": "user", "content": "long " * 200}])]
    assert online.fitting_prompts(prompts, template, 64, "prompts") == prompts[:1]
    with pytest.raises(ValueError, match="every prompt is longer"):
        online.fitting_prompts(prompts[1:], template, 64, "prompts")
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": "c"}]
    with pytest.raises(DataError, match=r"^f.jsonl:3: "):
        online.fitting_prompts([online.Prompt(2, "f.jsonl:3", turns)], template, 64, "prompts")
