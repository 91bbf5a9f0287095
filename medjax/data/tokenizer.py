"""Tokenizers available without a network: Llama-3 (tiktoken file from the
``llama-models`` package) and, later, Mistral and local Hugging Face directories.
"""

from __future__ import annotations

import functools
import importlib.util
import os

# Llama-3's pre-tokenisation pattern and special-token layout (128,000 BPE
# ranks followed by 256 special tokens).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_NAMED_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    "<|image|>",
]
LLAMA3_NUM_SPECIALS = 256


def _package_file(package: str, relpath: str) -> str:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (make install installs it)")
    path = os.path.join(list(spec.submodule_search_locations)[0], relpath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found in package {package!r}")
    return path


class Llama3Tokenizer:
    """Llama-3 BPE (tiktoken) with its special tokens; vocab size 128,256."""

    def __init__(self, model_file: str | None = None):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        model_file = model_file or _package_file("llama_models", "llama3/tokenizer.model")
        ranks = load_tiktoken_bpe(model_file)
        names = LLAMA3_NAMED_SPECIALS + [
            f"<|reserved_special_token_{2 + i}|>"
            for i in range(LLAMA3_NUM_SPECIALS - len(LLAMA3_NAMED_SPECIALS))]
        self.special_tokens = {name: len(ranks) + i for i, name in enumerate(names)}
        self._enc = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN,
                                      mergeable_ranks=ranks, special_tokens=self.special_tokens)
        self.vocab_size = len(ranks) + len(names)
        self.bos_id = self.special_tokens["<|begin_of_text|>"]
        self.eos_id = self.special_tokens["<|end_of_text|>"]
        self.eot_id = self.special_tokens["<|eot_id|>"]
        self.pad_id = self.special_tokens["<|finetune_right_pad_id|>"]

    def encode(self, text: str) -> list[int]:
        """Ordinary text to ids; special-token strings in the text are encoded as text."""
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids) -> str:
        return self._enc.decode(list(ids))


@functools.lru_cache(maxsize=4)
def get_tokenizer(name: str):
    if name == "llama3":
        return Llama3Tokenizer()
    raise ValueError(f"data.tokenizer: unknown tokenizer {name!r} (known: 'llama3')")
