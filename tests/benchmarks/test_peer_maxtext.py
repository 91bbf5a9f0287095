"""benchmarks/peer_maxtext.py: its pure parts (MaxText's arguments from the shape, its log
parsed, the run's summary, other benchmarks found and waited for, the venv's pins, the
command line), and one slow end-to-end run on a 2-layer model in MaxText's venv (skipped
when the venv is absent)."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


pm = _module("benchmarks/peer_maxtext.py", "peer_maxtext")

MEDIUM = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8,
              num_heads=8, num_kv_heads=4, head_dim=64)

# As MaxText 0.2.5 logs (absl prefixes; the TFLOPs lines are print()ed), shortened.
SAMPLE_LOG = """\
I1201 11:26:10.133778 139726519835520 pyconfig.py:591] Config param remat_policy: None
I1201 11:26:10.133790 139726519835520 pyconfig.py:591] Config param remat_policy_for_vit: minimal
I1201 11:26:10.133801 139726519835520 pyconfig.py:591] Config param opt_type: OptimizerType.ADAMW
I1201 11:26:10.133812 139726519835520 pyconfig.py:591] Config param scan_layers: False
I1201 11:26:10.133823 139726519835520 pyconfig.py:591] Config param mlp_activations: ['silu', 'linear']
I1201 11:26:15.640851 139843905862528 max_utils.py:829] [train] Note that compiler could over-estimate the HBM usage.
Per train step:
 Total TFLOPs: 1.07 
 split as 95.20% learnable weight flops and 4.80% attention flops
I1201 11:26:15.653583 139843905862528 metric_logger.py:425] number parameters: 0.058 billion
I1201 11:27:15.967535 140426018028416 metric_logger.py:265] completed step: 0, seconds: 0.048, TFLOP/s/device: 22.224, Tokens/s/device: 84863.051, total_weights: 4096, loss: 10.879, lm_loss: 10.879, perplexity: 53055.465
I1201 11:27:16.100000 140426018028416 metric_logger.py:265] completed step: 1, seconds: 0.131, TFLOP/s/device: 8.206, Tokens/s/device: 31334.389, total_weights: 4096, loss: 10.708, lm_loss: 10.708, perplexity: 44707.000
I1201 11:27:23.200000 140426018028416 metric_logger.py:265] completed step: 2, seconds: 7.146, TFLOP/s/device: 0.150, Tokens/s/device: 573.221, total_weights: 4096, loss: 10.552, lm_loss: 10.552, perplexity: 38250.000
I1201 11:27:30.300000 140426018028416 metric_logger.py:265] completed step: 3, seconds: 7.097, TFLOP/s/device: 0.151, Tokens/s/device: 577.100, total_weights: 4096, loss: 10.401, lm_loss: 10.401, perplexity: 32900.000
I1201 11:27:37.300000 140426018028416 metric_logger.py:265] completed step: 4, seconds: 7.046, TFLOP/s/device: 0.152, Tokens/s/device: 581.300, total_weights: 4096, loss: 10.250, lm_loss: 10.250, perplexity: 28300.000
I1201 11:27:44.300000 140426018028416 metric_logger.py:265] completed step: 5, seconds: 6.965, TFLOP/s/device: 0.154, Tokens/s/device: 588.100, total_weights: 4096, loss: 10.100, lm_loss: 10.100, perplexity: 24300.000
"""


def _args(args):
    return dict(a.split("=", 1) for a in args)


def test_maxtext_args_from_the_shape():
    args = pm.maxtext_args(MEDIUM, 512, 8, 8, "/w")
    assert len(args) == len(set(a.split("=")[0] for a in args))  # each key once
    d = _args(args)
    assert {k: d[k] for k in ("base_emb_dim", "base_mlp_dim", "base_num_decoder_layers",
                              "base_num_query_heads", "base_num_kv_heads", "head_dim",
                              "vocab_size", "max_target_length", "per_device_batch_size",
                              "steps")} == {
        "base_emb_dim": "512", "base_mlp_dim": "1536", "base_num_decoder_layers": "8",
        "base_num_query_heads": "8", "base_num_kv_heads": "4", "head_dim": "64",
        "vocab_size": "32000", "max_target_length": "512", "per_device_batch_size": "8",
        "steps": "8"}
    # f32, no remat (unrolled layers: scanned ones are always checkpointed), AdamW, untied,
    # llama3's RoPE theta, synthetic full rows, one CPU process, nothing written to gcloud
    assert (d["dtype"], d["weight_dtype"], d["remat_policy"], d["scan_layers"]) == (
        "float32", "float32", "none", "false")
    assert (d["opt_type"], d["logits_via_embedding"], d["rope_max_timescale"]) == (
        "adamw", "false", "500000")
    assert (d["dataset_type"], d["hardware"], d["skip_jax_distributed_system"],
            d["enable_checkpointing"], d["attention"], d["decoder_block"]) == (
        "synthetic", "cpu", "true", "false", "dot_product", "llama2")
    assert d["base_output_directory"] == "/w/out" and d["jax_cache_dir"] == "/w/jax_cache"


def test_maxtext_args_overrides_and_errors():
    d = _args(pm.maxtext_args(MEDIUM, 64, 2, 3, "/w",
                              ["remat_policy=full", "scan_layers=true", "new_key=a=b"]))
    assert (d["remat_policy"], d["scan_layers"], d["new_key"]) == ("full", "true", "a=b")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        pm.maxtext_args(MEDIUM, 64, 2, 3, "/w", ["remat_policy"])
    with pytest.raises(ValueError, match="query heads"):
        pm.maxtext_args(dict(MEDIUM, num_kv_heads=3), 64, 2, 3, "/w")


def test_parse_log_steps_config_and_flops():
    log = pm.parse_log(SAMPLE_LOG)
    assert [s["step"] for s in log["steps"]] == [0, 1, 2, 3, 4, 5]
    assert [s["seconds"] for s in log["steps"]] == [0.048, 0.131, 7.146, 7.097, 7.046, 6.965]
    assert log["steps"][2]["tokens_per_s"] == 573.221
    assert log["steps"][2]["weights"] == 4096 and log["steps"][5]["loss"] == 10.1
    assert log["config"]["remat_policy"] == "None"
    assert log["config"]["opt_type"] == "OptimizerType.ADAMW"
    assert log["config"]["mlp_activations"] == "['silu', 'linear']"
    assert log["tflops_per_step"] == 1.07 and log["params_billion"] == 0.058
    assert pm.parse_log("nothing here")["steps"] == []


def test_maxtext_result_drops_the_warmup_steps():
    job = {"maxtext_warmup": 3, "steps": 3, "batch": 8, "seq_len": 512}
    r = pm.maxtext_result(SAMPLE_LOG, job, "12% (+0% hypervisor steal)")
    assert r["step_times"] == [7.097, 7.046, 6.965]
    assert r["warmup_steps_s"] == [0.048, 0.131, 7.146]
    assert r["warmup_s"] == pytest.approx(0.048 + 0.131 + 7.146)
    assert r["positions"] == r["real"] == [4096] * 3 and r["sequences"] == [8] * 3
    assert r["other_load"] == "12% (+0% hypervisor steal)" and r["loss"] == 10.1
    assert r["config"] == {"remat_policy": "None", "scan_layers": "False",
                           "opt_type": "OptimizerType.ADAMW",
                           "mlp_activations": "['silu', 'linear']"}
    assert r["tflops_per_step"] == 1.07 and "load_end" in r
    # fewer steps logged than asked: an error, not a shorter median
    with pytest.raises(ValueError, match="expected 0-6"):
        pm.maxtext_result(SAMPLE_LOG, dict(job, steps=4), "")
    with pytest.raises(ValueError, match="logged steps \\[\\]"):
        pm.maxtext_result("", job, "")


def test_other_benchmarks_exclude_this_process_tree():
    out = ("101 /x/.venv/bin/python benchmarks/peer_trl.py --repeats=2\n"
           "202 bash -c cd /work/main && python benchmarks/train_throughput.py\n"
           "303 python benchmarks/memory_plan.py\n")
    assert pm.others_in(out, {202}) == ["101 /x/.venv/bin/python benchmarks/peer_trl.py "
                                        "--repeats=2", "303 python benchmarks/memory_plan.py"]
    assert pm.others_in("", set()) == []
    own = pm.own_pids()
    assert os.getpid() in own and os.getppid() in own


def test_wait_for_others_polls_until_they_end_or_the_limit():
    looks = [["7 peer_tunix.py"], ["7 peer_tunix.py"], []]
    slept = []
    w = pm.wait_for_others(30, 600, sleep=slept.append, find=lambda: looks.pop(0))
    assert w == {"seen": ["7 peer_tunix.py"], "waited_s": 60.0, "still": []}
    assert slept == [30, 30]
    w = pm.wait_for_others(30, 90, sleep=lambda s: None, find=lambda: ["8 dpo_packing.py"])
    assert w == {"seen": ["8 dpo_packing.py"], "waited_s": 90.0, "still": ["8 dpo_packing.py"]}
    assert pm.wait_for_others(30, 600, sleep=None, find=list)["waited_s"] == 0.0


def test_constraints_pin_torch_and_every_dependency():
    lines = pm.constraints().splitlines()
    assert lines[0] == "torch==2.13.0"
    assert "maxtext==0.2.5" in lines and "jax==0.12.0.1" in lines
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", x) for x in lines)
    assert len(lines) == len(pm.DEPS) + 1


def test_args_defaults_and_plan():
    a = pm.parse_args([])
    assert (a.shape, a.seq_len, a.batch, a.steps, a.warmup, a.maxtext_warmup, a.repeats) == (
        "medium", 512, 8, 5, 1, 3, 2)
    assert a.settings == ["equal"]  # what peer_trl.report reads
    plan = pm.plan_jobs(a, "/src", "abc", "/root")
    assert [(fw, job["framework"]) for fw, _, job in plan] == [("medjax", "medjax"),
                                                               ("maxtext", "maxtext")]
    assert all(job["seq_len"] == 512 and job["batch"] == 8 for _, _, job in plan)
    for bad in (["--steps=0"], ["--maxtext_warmup=-1"], ["--shape=large"]):
        with pytest.raises(SystemExit):
            pm.parse_args(bad)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "benchmarks", ".venv-maxtext", "bin",
                                                    "python")),
                    reason="benchmarks/.venv-maxtext absent (peer_maxtext.py makes it)")
def test_peer_maxtext_small(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "peer_maxtext.py"), "--shape=small",
           "--steps=2", "--repeats=1", "--seq_len=64", "--batch=2", "--no_wait",
           f"--workdir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    rows = re.findall(r"^\| sft \| (medjax|maxtext) \|.*\| 100% \|", text, re.M)
    assert rows == ["medjax", "maxtext"]
    ratios = [float(x) for x in re.findall(r": ([\d.]+)x$", text, re.M)]
    assert len(ratios) == 1 and ratios[0] > 0
    assert "'remat_policy': 'None'" in text and "'opt_type': 'OptimizerType.ADAMW'" in text
