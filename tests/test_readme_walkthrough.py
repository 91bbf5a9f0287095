"""The README's "Your own model and data" block runs as written (bash, from a directory
laid out like a fresh clone), with a tiny Llama-3 directory built here as MODEL:
SFT from an HF directory -> export -> transformers chat -> DPO from the SFT run -> export."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_llama3_dir


def walkthrough_block() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_walkthrough_runs_as_written(tmp_path):
    block = walkthrough_block()
    assert re.search(r"^MODEL=", block, re.M)
    model = tiny_llama3_dir(tmp_path / "Meta-Llama-3-8B-Instruct")
    block = re.sub(r"^MODEL=\S+", f"MODEL={model}", block, count=1, flags=re.M)
    work = tmp_path / "clone"  # the repository's layout: configs/, medjax/, .venv/
    work.mkdir()
    for name in ("configs", "medjax"):
        os.symlink(os.path.join(ROOT, name), work / name)
    venv = os.path.join(ROOT, ".venv")
    if os.path.exists(os.path.join(venv, "bin", "activate")):
        os.symlink(venv, work / ".venv")
    else:  # tests run by another interpreter: "activate" puts that one first
        (work / ".venv" / "bin").mkdir(parents=True)
        (work / ".venv" / "bin" / "activate").write_text(
            f'export PATH="{os.path.dirname(sys.executable)}:$PATH"\n')
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    assert "Traceback" not in r.stderr
    print(r.stdout[-2000:])  # the chat reply among the runs' final: lines
    runs = work / "runs"
    for name in ("sft-hf", "dpo-hf"):
        files = set(os.listdir(runs / name))
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "generation_config.json"} <= files, files
    sft = [json.loads(x) for x in open(runs / "sft" / "metrics.jsonl")]
    dpo = [json.loads(x) for x in open(runs / "dpo" / "metrics.jsonl")]
    assert any("eval/loss" in m for m in sft) and sft[-1]["step"] > 1  # epochs and eval_split
    assert any("eval/rewards/accuracies" in m for m in dpo) and dpo[-1]["step"] == 20
    # the SFT run took the model's tokenizer and its chat template
    meta = json.loads((runs / "sft" / "model_config.json").read_text())
    assert meta["tokenizer"] == model and meta["template"] == "hf"
