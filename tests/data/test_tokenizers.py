"""Tokenizers: known facts, round trips, and parity with ``transformers``
tokenizers built locally from the same files (no network)."""

import json
import os
import shutil

import pytest

from medjax.data.tokenizer import (LLAMA3_PATTERN, MISTRAL_MODEL, HFTokenizer, Llama3Tokenizer,
                                   SentencePieceTokenizer, _package_file, get_tokenizer)

TEXTS = [
    "Hello world",
    "The patient's HbA1c was 7.2% on 2024-03-15; target < 7.0%.",
    "Dose: 1250 mg q12h, then 12345678 units. Pi is 3.14159265.",
    "Ünïcödé: café, naïve, Ærø — 中文 (糖尿病), 日本語, Ελληνικά, emoji 🩺🚑.",
    "Line one\nLine two\n\n\tindented\r\nwindows line",
    "don't I'll WE'RE they've",
    "```python\ndef f(x):\n    return x ** 2\n```",
    "trailing space ",
    "<|eot_id|> and </s> and <s> are plain text here",
]


def _llama3_hf_dir(path, chat_template=None):
    """A transformers fast tokenizer directory equivalent to Llama3Tokenizer, built from
    the same tiktoken ranks with transformers' own TikTokenConverter."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ours = get_tokenizer("llama3")
    specials = sorted(ours.special_tokens, key=ours.special_tokens.get)
    backend = TikTokenConverter(vocab_file=_package_file("llama_models", "llama3/tokenizer.model"),
                                pattern=LLAMA3_PATTERN, extra_special_tokens=specials).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                                  eos_token="<|end_of_text|>",
                                  pad_token="<|finetune_right_pad_id|>")
    if chat_template:
        tok.chat_template = chat_template
    tok.save_pretrained(path)
    return str(path)


def _mistral_hf_dir(path, chat_template=None, legacy=False):
    """A transformers LlamaTokenizer directory from a copy of mistral-common's model file."""
    from transformers import LlamaTokenizer

    src = os.path.join(path, "src")
    os.makedirs(src)
    shutil.copy(_package_file(*MISTRAL_MODEL), os.path.join(src, "tokenizer.model"))
    tok = LlamaTokenizer.from_pretrained(src, legacy=legacy)
    if chat_template:
        tok.chat_template = chat_template
    out = os.path.join(path, "hf")
    tok.save_pretrained(out)
    if legacy:  # transformers 5 does not save `legacy`; the Hub's Mistral configs carry it
        cfg_path = os.path.join(out, "tokenizer_config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["legacy"] = True
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
    return out


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    return _llama3_hf_dir(tmp_path_factory.mktemp("llama3_hf"))


# ------------------------------------------------------------------ llama3
def test_llama3_known_facts():
    tok = get_tokenizer("llama3")
    assert isinstance(tok, Llama3Tokenizer) and tok.name == "llama3"
    assert tok.vocab_size == 128256
    assert tok.bos_id == tok.encode_special("<|begin_of_text|>") == 128000
    assert tok.eos_id == tok.encode_special("<|end_of_text|>") == 128001
    assert tok.encode_special("<|start_header_id|>") == 128006
    assert tok.encode_special("<|end_header_id|>") == 128007
    assert tok.eot_id == tok.encode_special("<|eot_id|>") == 128009
    assert tok.pad_id == tok.encode_special("<|finetune_right_pad_id|>") == 128004
    # Meta's naming (llama_models): the last of the 256 is reserved_special_token_245.
    assert tok.special_tokens["<|reserved_special_token_245|>"] == 128255
    assert len(tok.special_tokens) == 256 and tok.chat_template is None
    # Well-known Llama-3 ids.
    assert tok.encode("Hello world") == [9906, 1917]
    assert tok.encode("user") == [882] and tok.encode("assistant") == [78191]
    assert tok.encode("\n\n") == [271]
    with pytest.raises(ValueError, match="no special token"):
        tok.encode_special("<|im_start|>")


def test_llama3_round_trip_and_specials_as_text():
    tok = get_tokenizer("llama3")
    for text in TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(i < 128000 for i in ids), text  # special-token strings stay text
        assert tok.encode_continuation(text) == ids
    assert tok.decode([128000] + tok.encode("hi") + [128009]) == "<|begin_of_text|>hi<|eot_id|>"


def test_llama3_digit_groups():
    tok = get_tokenizer("llama3")
    pieces = [tok.decode([i]) for i in tok.encode("1234567 89 12345")]
    assert pieces == ["123", "456", "7", " ", "89", " ", "123", "45"]
    for n in ["7", "42", "999", "1000", "31415926535"]:
        digits = [tok.decode([i]) for i in tok.encode(n)]
        assert "".join(digits) == n and all(1 <= len(d) <= 3 for d in digits)
        assert [len(d) for d in digits[:-1]] == [3] * (len(digits) - 1)  # left to right


def test_llama3_equals_transformers_fast_tokenizer(llama3_dir):
    """transformers' TikTokenConverter turns the same ranks into a fast tokenizer."""
    from transformers import AutoTokenizer

    ours = get_tokenizer("llama3")
    hf = AutoTokenizer.from_pretrained(llama3_dir)
    assert len(hf) == 128256
    assert hf.convert_tokens_to_ids(["<|begin_of_text|>", "<|eot_id|>"]) == [128000, 128009]
    for text in TEXTS[:-1]:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False), text
    # transformers parses special-token strings in text; medjax's encode does not.
    assert 128009 in hf.encode(TEXTS[-1], add_special_tokens=False)


def test_hf_directory_wrapper_llama3(llama3_dir):
    ours, tok = get_tokenizer("llama3"), get_tokenizer(llama3_dir)
    assert isinstance(tok, HFTokenizer) and tok.name == llama3_dir
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (128256, 128000, 128001, 128004)
    assert tok.chat_template is None
    assert tok.special_tokens == ours.special_tokens
    assert tok.encode_special("<|eot_id|>") == 128009
    for text in TEXTS:  # including the special-token strings, split as text
        assert tok.encode(text) == ours.encode(text), text
        assert tok.encode_continuation(text) == ours.encode(text), text
        assert tok.decode(tok.encode(text)) == text


# ------------------------------------------------------------------ mistral
def test_mistral_known_facts():
    tok = get_tokenizer("mistral")
    assert isinstance(tok, SentencePieceTokenizer) and tok.name == "mistral"
    assert tok.vocab_size == 32000
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)
    assert tok.special_tokens == {"<unk>": 0, "<s>": 1, "</s>": 2}
    assert tok.encode_special("</s>") == 2
    assert tok.chat_template is None
    assert tok.encode("[INST]") == [733, 16289, 28793]  # "▁[", "INST", "]"


def test_mistral_round_trip_and_specials_as_text():
    tok = get_tokenizer("mistral")
    for text in TEXTS + [" leading space", "two  spaces", "\nnewline first"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text, text
        assert 1 not in ids and 2 not in ids and 0 not in ids, text
    assert tok.decode([1] + tok.encode("hi") + [2]) == "<s>hi</s>"


def test_mistral_dummy_prefix():
    tok = get_tokenizer("mistral")
    # encode: a new word (SentencePiece's dummy prefix), like mistral-common.
    assert tok.encode("Hello") == [22557]  # "▁Hello"
    assert tok.encode(" Hello") == [28705, 22557]  # "▁", "▁Hello"
    # encode_continuation: glued to the text before it.
    assert tok.encode_continuation("Hello") == [16230]  # "Hello"
    assert tok.encode_continuation(" Hello") == [22557]
    # One string == its first part + the continuation of the rest (cut after a newline).
    for head, tail in [("### Response:\n", "The answer is 42."),
                       ("a\n", "b c"), ("x:\n\n", "  indented")]:
        assert tok.encode(head + tail) == tok.encode(head) + tok.encode_continuation(tail)


def test_mistral_equals_transformers_llama_tokenizer(tmp_path):
    from transformers import LlamaTokenizer

    ours = get_tokenizer("mistral")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(_package_file(*MISTRAL_MODEL), src / "tokenizer.model")
    hf = LlamaTokenizer.from_pretrained(str(src))  # a directory: see the module docstring
    assert len(hf) == 32000 and (hf.bos_token_id, hf.eos_token_id) == (1, 2)
    # Texts without a leading space or runs of spaces (where transformers 5's
    # converted tokenizer and SentencePiece itself differ).
    texts = [t for t in TEXTS[:-2] if "  " not in t] + ["[INST] What is anemia? [/INST]"]
    assert len(texts) == 7
    for text in texts:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False), text


def test_hf_directory_wrapper_sentencepiece(tmp_path):
    template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    d = _mistral_hf_dir(str(tmp_path), chat_template=template)
    ours, tok = get_tokenizer("mistral"), get_tokenizer(d)
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (32000, 1, 2)
    assert tok.pad_id == 2  # no pad token: EOS
    assert tok.special_tokens == {"<unk>": 0, "<s>": 1, "</s>": 2}
    assert tok.chat_template == template
    for text in ["What is anemia?", "</s> stays text", "Dose 1250 mg\nnext line"]:
        assert tok.encode(text) == ours.encode(text)
        assert tok.encode_continuation(text) == ours.encode_continuation(text)
    assert tok.encode_continuation("\nfoo") == ours.encode_continuation("\nfoo")


def test_get_tokenizer_dispatch_and_errors(tmp_path):
    assert get_tokenizer("llama3") is get_tokenizer("llama3")  # cached
    with pytest.raises(ValueError, match=r"data\.tokenizer.*'nope'.*'llama3', 'mistral'"):
        get_tokenizer("nope")
    with pytest.raises(ValueError, match="data.tokenizer"):
        get_tokenizer(str(tmp_path / "missing_dir"))
    with pytest.raises(Exception):  # a directory, but not a tokenizer: transformers says why
        get_tokenizer(str(tmp_path))
