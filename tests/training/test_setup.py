"""Set-up: the tokenizer follows the model, and a tokenizer the model cannot embed is
refused before any step."""

import json
import os

import pytest
from conftest import BASE, build_hf_model, load_config

from medjax.training import run
from medjax.training.state import data_tools


def _pretrain(init_from, **kw):
    return load_config("pretrain", **{"model.init_from": str(init_from), "steps": 1,
                                      "batch_size": 8, "seq_len": 64, "logging.every": 1,
                                      "logging.progress": False, "eval.at_start": False,
                                      "eval.every": 0, "checkpoint.every": 100, **kw})


@pytest.fixture(scope="module")
def mistral_hf(tmp_path_factory):
    """An HF Mistral directory without tokenizer files (vocabulary of 32,000)."""
    path = tmp_path_factory.mktemp("mistral")
    build_hf_model(path, "Mistral", **dict(BASE, vocab_size=32000, sliding_window=8))
    return path


def test_the_default_tokenizer_follows_the_model(mistral_hf, tmp_path):
    spec, tok, _ = data_tools(_pretrain(mistral_hf))
    assert spec == "mistral" and tok.vocab_size == 32000
    run(_pretrain(mistral_hf), str(tmp_path / "wd"))
    meta = json.loads((tmp_path / "wd" / "model_config.json").read_text())
    assert meta["tokenizer"] == "mistral" and meta["objective"] == "pretrain"
    # A run started from that workdir uses the tokenizer it was trained with.
    spec, _, template = data_tools(load_config("sft", **{"model.init_from":
                                                         str(tmp_path / "wd")}))
    assert spec == "mistral" and template.name == "mistral"


def test_a_tokenizer_beyond_the_vocabulary_is_refused_before_any_step(mistral_hf, tmp_path):
    """The Mistral model with the Llama-3 tokenizer (ids up to 128,255 into 32,000 rows)
    used to train to `loss nan` and exit 0."""
    wd = tmp_path / "wd"
    with pytest.raises(ValueError, match=r"data.tokenizer='llama3' has ids up to 128255, but "
                                         r"the model \(model.init_from=.*\) has vocab_size 32000"):
        run(_pretrain(mistral_hf, **{"data.tokenizer": "llama3"}), str(wd))
    assert not (wd / "checkpoints").exists()


def test_an_hf_directory_with_its_own_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    hf = tmp_path / "hf"
    build_hf_model(hf, "Llama", **BASE)  # vocabulary of 256
    vocab = {f"w{i}": i for i in range(299)}
    vocab["[UNK]"] = 299
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(hf)
    spec, tok, _ = data_tools(_pretrain(hf))
    assert spec == str(hf) and tok.vocab_size == 300
    with pytest.raises(ValueError, match=r"has ids up to 299, but the model .* has "
                                         r"vocab_size 256"):
        run(_pretrain(hf), str(tmp_path / "wd"))
    assert os.listdir(tmp_path / "wd") == []
