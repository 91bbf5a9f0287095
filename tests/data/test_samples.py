"""The bundled sample files parse in their formats and tokenise with the templates."""

import pytest

from medjax.data.formats import parse
from medjax.data.samples import path
from medjax.data.sources import JsonlSource
from medjax.data.templates import get_template
from medjax.data.tokenizer import get_tokenizer

FILES = {
    "pretrain.jsonl": "text", "pretrain_eval.jsonl": "text",
    "sft_sharegpt.jsonl": "sharegpt", "sft_sharegpt_eval.jsonl": "sharegpt",
    "sft_messages.jsonl": "messages", "sft_messages_eval.jsonl": "messages",
    "sft_alpaca.jsonl": "alpaca", "preference.jsonl": "preference",
    "preference_eval.jsonl": "preference", "preference_messages.jsonl": "preference",
    "kto.jsonl": "kto", "kto_eval.jsonl": "kto",
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_bundled_file_parses_and_tokenises(name):
    src = JsonlSource(path(name))
    assert len(src) >= 40
    template = get_template("llama3", get_tokenizer("llama3"))
    for i in range(len(src)):
        where, record = src[i]
        fmt, ex = parse(record)
        assert fmt == FILES[name], where
        if "messages" in ex:
            ids, mask = template.encode_conversation(ex["messages"])
            assert 0 < sum(mask) < len(ids)
        elif "prompt" in ex:
            assert template.encode_prompt(ex["prompt"])


def test_missing_sample_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no bundled sample file 'nope.jsonl'"):
        path("nope.jsonl")
