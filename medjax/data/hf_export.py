"""The tokenizer and chat template a model was trained with, as a Hugging Face tokenizer
directory: what an export needs so that ``transformers``, vLLM-style loaders and
lm-evaluation-harness load it as it is.

  llama3   tokenizer.json converted from the same tiktoken ranks (transformers'
           TikTokenConverter, Llama-3's pattern and 256 special tokens)
  mistral  the same SentencePiece model as a ``LlamaTokenizer`` (legacy=True: every text
           run starts with the word-start "▁", as medjax's ``encode`` and mistral-common do)
  a directory  saved again by the tokenizer it is (its own chat template kept)

The built-in chat templates are written as Jinja (``JINJA``) that ``apply_chat_template``
renders to the ids medjax's templates produce (tests/data/test_templates.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

# Llama-3's instruct layout (the ``llama3`` template).
LLAMA3_JINJA = (
    "{{- bos_token }}"
    "{%- for m in messages %}"
    "{{- '<|start_header_id|>' + ('ipython' if m['role'] == 'tool' else m['role'])"
    " + '<|end_header_id|>\\n\\n' + (m['content'] | trim)"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}")

# Mistral-Instruct v0.1 as mistral-common encodes it (the ``mistral`` template), as a
# string for a tokenizer that starts every text run with "▁" (legacy=True): the "▁"
# SentencePiece puts before each separately encoded answer is the ' ' here.
MISTRAL_JINJA = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] | trim %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    "{%- for m in turns %}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('roles must alternate user/assistant') }}{%- endif %}"
    "{%- if m['role'] == 'user' %}"
    "{%- if loop.first and system %}{%- set text = system + '\\n\\n' + (m['content'] | trim) %}"
    "{%- else %}{%- set text = m['content'] | trim %}{%- endif %}"
    "{{- '[INST] ' + text + ' [/INST]' }}"
    "{%- else %}{{- ' ' + (m['content'] | trim) + eos_token }}{%- endif %}"
    "{%- endfor %}")

JINJA = {"llama3": LLAMA3_JINJA, "mistral": MISTRAL_JINJA}


def end_of_turn(template) -> int | None:
    """The id the template ends every assistant response with (None: no template)."""
    if template is None:
        return None
    try:
        return template.encode_response("Yes.", prompt=[{"role": "user", "content": "Hi"}])[-1]
    except (ValueError, TypeError):
        return None


def hf_tokenizer(tokenizer):
    """A ``transformers`` tokenizer that encodes as ``tokenizer`` does."""
    from .tokenizer import HFTokenizer, Llama3Tokenizer, SentencePieceTokenizer

    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.hf
    if isinstance(tokenizer, Llama3Tokenizer):
        from transformers import PreTrainedTokenizerFast
        from transformers.convert_slow_tokenizer import TikTokenConverter

        from .tokenizer import LLAMA3_PATTERN
        specials = sorted(tokenizer.special_tokens, key=tokenizer.special_tokens.get)
        backend = TikTokenConverter(vocab_file=tokenizer.model_file, pattern=LLAMA3_PATTERN,
                                    extra_special_tokens=specials).converted()
        return PreTrainedTokenizerFast(tokenizer_object=backend,
                                       bos_token="<|begin_of_text|>",
                                       eos_token="<|end_of_text|>",
                                       pad_token="<|finetune_right_pad_id|>")
    if isinstance(tokenizer, SentencePieceTokenizer):
        from transformers import LlamaTokenizer
        with tempfile.TemporaryDirectory() as src:
            shutil.copy(tokenizer.model_file, os.path.join(src, "tokenizer.model"))
            hf = LlamaTokenizer.from_pretrained(src, legacy=True)
        hf.pad_token = hf.convert_ids_to_tokens(tokenizer.pad_id)
        return hf
    raise ValueError(f"tokenizer {getattr(tokenizer, 'name', tokenizer)!r} cannot be exported "
                     "as a Hugging Face tokenizer")


def token_ids(tokenizer, template) -> dict:
    """The ids for ``config.json`` / ``generation_config.json``: ``bos_token_id``,
    ``eos_token_id`` (a list: the tokenizer's EOS, then the template's end of turn if it
    is another token, so that generation stops at the end of a turn), ``pad_token_id``."""
    eos = [i for i in (tokenizer.eos_id, end_of_turn(template)) if i is not None]
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": list(dict.fromkeys(eos)),
            "pad_token_id": tokenizer.pad_id}


def save_tokenizer(tokenizer, template, path: str) -> None:
    """Writes the tokenizer files, with the chat template as Jinja, into ``path``."""
    from .tokenizer import SentencePieceTokenizer

    hf = hf_tokenizer(tokenizer)
    name = getattr(template, "name", None)
    end = end_of_turn(template)
    if name in JINJA:
        hf.chat_template = JINJA[name]
        if end is not None:  # a chat model ends its turns with it (Llama-3-Instruct's layout)
            hf.eos_token = hf.convert_ids_to_tokens(end)
    hf.save_pretrained(path)
    if isinstance(tokenizer, SentencePieceTokenizer):  # transformers 5 does not save it
        cfg_path = os.path.join(path, "tokenizer_config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["legacy"] = True
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
