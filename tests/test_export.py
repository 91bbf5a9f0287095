"""An export loads as-is: transformers' AutoTokenizer encodes like medjax, its chat template
renders medjax's prompts, and generate() stops at the template's end of turn."""

import json

import numpy as np
import pytest
import torch
import transformers
from conftest import load_config

from medjax.convert import convert
from medjax.data.templates import get_template
from medjax.data.tokenizer import get_tokenizer
from medjax.training import run

TEXTS = ["Metformin is first-line for type 2 diabetes.", "  two  spaces\nand a line",
         "Dose: 500 mg twice daily (max 2,000 mg).", "Ünïcödé and émojis 💊"]
PROMPT = [{"role": "system", "content": "You are a careful medical assistant."},
          {"role": "user", "content": "What is anemia?"},
          {"role": "assistant", "content": "A low red blood cell count."},
          {"role": "user", "content": " Name one cause. "}]


def _sft_export(tmp_path, **kw):
    wd, out = tmp_path / "sft", tmp_path / "hf"
    run(load_config("sft", **{"steps": 1, "batch_size": 8, "seq_len": 64,
                              "logging.progress": False, "eval.at_start": False,
                              "eval.every": 0, **kw}), str(wd))
    convert("hf", str(wd), str(out))
    return out


def _ends_at_end_of_turn(out, prompt_ids, eot):
    """Greedy generation from a model whose LM head favours only ``eot`` after the prompt
    stops right there (not at max_new_tokens) iff generation_config knows the id."""
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        h = model.model(ids).last_hidden_state[0, -1]
        head = model.get_output_embeddings().weight
        head.zero_()
        head[eot] = h / h.norm()
        generated = model.generate(ids, max_new_tokens=8, do_sample=False)[0, len(prompt_ids):]
    return generated.tolist()


def test_llama3_sft_export_loads_in_transformers(tmp_path):
    out = _sft_export(tmp_path)
    ours = get_tokenizer("llama3")
    hf = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text), text
    prompt = list(hf.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True,
                                         return_dict=False))
    assert prompt == get_template("llama3", ours).encode_prompt(PROMPT)
    config = json.loads((out / "config.json").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    assert config["bos_token_id"] == 128000 and config["eos_token_id"] == [128001, 128009]
    assert "pad_token_id" not in config
    assert generation == {"bos_token_id": 128000, "eos_token_id": [128001, 128009],
                          "pad_token_id": 128004}
    assert hf.eos_token == "<|eot_id|>"
    assert _ends_at_end_of_turn(out, prompt, 128009) == [128009]


def test_mistral_export_and_a_run_without_a_chat_template(tmp_path):
    out = _sft_export(tmp_path, **{"model.preset": "mistral_tiny", "model.vocab_size": 32000})
    ours = get_tokenizer("mistral")
    hf = transformers.AutoTokenizer.from_pretrained(out)
    # Not runs of spaces: there transformers 5's converted SentencePiece tokenizers (the
    # Hub's Mistral ones too) differ from SentencePiece itself (tests/data/test_tokenizers.py).
    for text in [t for t in TEXTS if "  " not in t]:
        assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text), text
    prompt = list(hf.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True,
                                         return_dict=False))
    assert prompt == get_template("mistral", ours).encode_prompt(PROMPT)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2] and generation["bos_token_id"] == 1
    assert _ends_at_end_of_turn(out, prompt, 2) == [2]

    # A pretraining run has no chat template: the export carries the tokenizer only.
    wd = tmp_path / "pt"
    run(load_config("pretrain", **{"steps": 1, "batch_size": 8, "seq_len": 64,
                                   "logging.progress": False, "eval.at_start": False,
                                   "eval.every": 0}), str(wd))
    convert("hf", str(wd), str(tmp_path / "pt_hf"))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "pt_hf")
    assert not hf.chat_template and hf.eos_token == "<|end_of_text|>"
    assert json.loads((tmp_path / "pt_hf" / "generation_config.json").read_text())[
        "eos_token_id"] == [128001]


def test_a_model_without_a_recorded_tokenizer_says_so(hf_case, tmp_path, capsys):
    path = hf_case("llama_gqa")[0]  # no tokenizer files
    convert("medjax", path, str(tmp_path / "ckpt"))
    convert("hf", str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    assert "records no tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "hf" / "tokenizer.json").exists()
    with pytest.raises(FileExistsError):  # an existing export is never overwritten
        convert("hf", str(tmp_path / "ckpt"), str(tmp_path / "hf"), tokenizer="llama3")
    assert not (tmp_path / "hf" / "tokenizer.json").exists()
    np.testing.assert_equal(sorted(p.name for p in (tmp_path / "hf").iterdir()),
                            ["config.json", "model.safetensors"])
