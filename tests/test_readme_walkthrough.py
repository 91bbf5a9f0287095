"""The README's "Your own model and data" block runs as written (bash, from a directory
laid out like a fresh clone), with a tiny Llama-3 directory built here as MODEL:
SFT from an HF directory -> export -> transformers chat -> DPO from the SFT run -> export."""

import json
import os
import re

import pytest
from conftest import readme_block, run_readme_block, tiny_llama3_dir


def test_readme_walkthrough_runs_as_written(tmp_path):
    block = readme_block("Your own model and data")
    assert re.search(r"^MODEL=", block, re.M)
    model = tiny_llama3_dir(tmp_path / "Meta-Llama-3-8B-Instruct")
    work = tmp_path / "clone"
    r = run_readme_block(block, work, model)
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
