"""Tokenizers available without a network, behind one small interface.

``get_tokenizer(name_or_path)`` (the ``data.tokenizer`` config field) returns:

  ``"llama3"``   Llama-3 byte-level BPE (tiktoken ranks from the ``llama-models``
                 package), 128,000 ranks + 256 special tokens = 128,256 ids.
  ``"mistral"``  Mistral-7B-v0.1's SentencePiece model (32,000 ids) shipped in the
                 ``mistral-common`` package as ``data/tokenizer.model.v1``.
  a directory    a local Hugging Face tokenizer directory (``tokenizer.json``,
                 ``tokenizer_config.json``, ...), loaded with
                 ``transformers.AutoTokenizer`` and never from the network.

Every tokenizer has:

  ``encode(text) -> list[int]``  ordinary text to ids. No BOS/EOS is added, and
                 special-token strings in the text (``"<|eot_id|>"``, ``"</s>"``)
                 are encoded as plain text, never as the special token: data can
                 not inject control tokens.
  ``encode_continuation(text)``  ids for text that directly follows other text,
                 without the word-start marker SentencePiece adds (see below);
                 the same as ``encode`` for byte-level BPE.
  ``encode_special(name) -> int``  the id of a special token (``"<|eot_id|>"``).
  ``decode(ids) -> str``  special tokens are rendered as their strings.
  ``bos_id``, ``eos_id``, ``pad_id``, ``vocab_size``, ``name``,
  ``special_tokens`` (dict name -> id), ``chat_template`` (HF directories: the
  directory's Jinja template or None; None for the built-in tokenizers).

SentencePiece and the leading space. SentencePiece (``mistral``) encodes every
call's text as if it started a new word: it prepends a "dummy prefix" ``▁``
(U+2581, its space) to the text, so ``encode("Hello") == [22557]`` (``▁Hello``)
and ``encode(" Hello") == [28705, 22557]`` (``▁``, ``▁Hello``). This is exactly
how Mistral's reference library (``mistral-common``) encodes documents and each
piece of a chat turn, so the ``mistral`` chat template calls ``encode`` for each
segment. ``decode`` drops that marker at the start of a decoded run, so
``decode(encode(x)) == x``. ``encode_continuation`` leaves it out (``"Hello"`` ->
``Hello``, id 16230), which is what tokenizing one long string gives in the
middle of a word or line; the Alpaca template uses it for the response that
follows ``"### Response:\\n"``.
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

# mistral-common's copy of Mistral-7B-v0.1's SentencePiece model (32,000 pieces).
MISTRAL_MODEL = ("mistral_common", "data/tokenizer.model.v1")

KNOWN = ("llama3", "mistral")


def _package_file(package: str, relpath: str) -> str:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (make install installs it)")
    path = os.path.join(list(spec.submodule_search_locations)[0], relpath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found in package {package!r}")
    return path


class _Base:
    """What the tokenizers share; subclasses set the attributes and ``encode``/``decode``."""

    name: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    special_tokens: dict[str, int]
    chat_template = None

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_continuation(self, text: str) -> list[int]:
        return self.encode(text)

    def encode_special(self, name: str) -> int:
        """The id of special token ``name`` (e.g. ``"<|eot_id|>"``); ValueError if absent."""
        try:
            return self.special_tokens[name]
        except KeyError:
            raise ValueError(f"tokenizer {self.name!r} has no special token {name!r}") from None

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r} vocab_size={self.vocab_size}>"


class Llama3Tokenizer(_Base):
    """Llama-3 BPE (tiktoken) with its special tokens; vocab size 128,256.

    ``pad_id`` is ``<|finetune_right_pad_id|>`` (128004), Meta's padding token;
    ``eot_id`` (``<|eot_id|>``, 128009) ends a chat turn, ``eos_id``
    (``<|end_of_text|>``, 128001) ends a document.
    """

    name = "llama3"

    def __init__(self, model_file: str | None = None):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        self.model_file = model_file = model_file or _package_file("llama_models",
                                                                  "llama3/tokenizer.model")
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
        return self._enc.decode([int(i) for i in ids])


class SentencePieceTokenizer(_Base):
    """A SentencePiece model; by default Mistral-7B-v0.1's (``name="mistral"``).

    ``bos_id`` 1 (``<s>``), ``eos_id`` 2 (``</s>``). The model has no padding
    token: ``pad_id`` is 0 (``<unk>``), which encoding never produces (the model
    falls back to bytes for anything outside its pieces), so padding can not be
    mistaken for a real token (EOS would be). Padding is masked out anyway.
    ``encode`` adds SentencePiece's dummy-prefix ``▁`` as the reference library
    does; ``encode_continuation`` does not (module docstring).
    """

    def __init__(self, model_file: str | None = None, name: str = "mistral"):
        import sentencepiece as spm

        self.model_file = model_file = model_file or _package_file(*MISTRAL_MODEL)
        self.name = name
        self._sp = spm.SentencePieceProcessor(model_file=model_file)
        self._sp_cont = self._without_dummy_prefix(model_file)
        self.vocab_size = self._sp.vocab_size()
        self.special_tokens = {self._sp.id_to_piece(i): i for i in range(self.vocab_size)
                               if self._sp.is_control(i) or self._sp.is_unknown(i)}
        self.bos_id = self._sp.bos_id()
        self.eos_id = self._sp.eos_id()
        self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self._sp.unk_id()

    @staticmethod
    def _without_dummy_prefix(model_file: str):
        """The same model with ``add_dummy_prefix`` switched off (one protobuf field)."""
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        with open(model_file, "rb") as f:
            proto.ParseFromString(f.read())
        proto.normalizer_spec.add_dummy_prefix = False
        return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as a new word (dummy prefix ``▁`` added); no BOS/EOS.

        ``"</s>"`` in the text is encoded as the characters, not as EOS
        (SentencePiece never matches control tokens in input text).
        """
        return self._sp.encode(text)

    def encode_continuation(self, text: str) -> list[int]:
        """Ids of ``text`` glued to what precedes it (no dummy prefix)."""
        return self._sp_cont.encode(text)

    def decode(self, ids) -> str:
        """Text of ``ids``; control tokens appear as ``<s>``/``</s>`` and each run of
        ordinary ids is decoded as SentencePiece does (leading ``▁`` dropped)."""
        out, run = [], []
        for i in (int(i) for i in ids):
            if self._sp.is_control(i):
                out.append(self._sp.decode(run))
                out.append(self._sp.id_to_piece(i))
                run = []
            else:
                run.append(i)
        out.append(self._sp.decode(run))
        return "".join(out)


class HFTokenizer(_Base):
    """A local Hugging Face tokenizer directory, behind the common interface.

    ``vocab_size`` is ``len(tokenizer)`` (base vocabulary plus added tokens);
    ``bos_id``/``eos_id`` are None when the tokenizer has no such token;
    ``pad_id`` is the pad token, or the EOS token when there is none (the usual
    convention; padding is masked out). ``special_tokens`` holds every added
    token marked special. ``hf`` is the ``transformers`` tokenizer itself.
    """

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.name = path
        self.hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.vocab_size = len(self.hf)
        self.bos_id = self.hf.bos_token_id
        self.eos_id = self.hf.eos_token_id
        self.pad_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id
        added = self.hf.added_tokens_decoder.items()
        self.special_tokens = {tok.content: int(i) for i, tok in added if tok.special}
        for tok in self.hf.all_special_tokens:
            i = self.hf.convert_tokens_to_ids(tok)
            if i is not None:
                self.special_tokens.setdefault(tok, int(i))
        self.chat_template = getattr(self.hf, "chat_template", None) or None

    def encode(self, text: str) -> list[int]:
        """The tokenizer's ids for ``text`` with no added BOS/EOS and special-token
        strings split as text (``split_special_tokens``)."""
        return list(self.hf(text, add_special_tokens=False,
                            split_special_tokens=True)["input_ids"])

    def encode_continuation(self, text: str) -> list[int]:
        """``text``'s ids as they come after other text, whatever the tokenizer does
        at the start of a string (e.g. a SentencePiece-style prefix ``▁``).

        Computed as ``encode(anchor + text)`` minus ``encode(anchor)`` for an anchor
        ("\\n", else "a") whose ids are an exact prefix; ValueError if no anchor is
        (the text would merge with both).
        """
        if not text:
            return []
        for anchor in ("\n", "a"):
            base = self.encode(anchor)
            ids = self.encode(anchor + text)
            if ids[:len(base)] == base:
                return ids[len(base):]
        raise ValueError(f"tokenizer {self.name!r}: can not encode {text[:40]!r} as a continuation")

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False,
                              clean_up_tokenization_spaces=False)


@functools.lru_cache(maxsize=8)
def get_tokenizer(name: str):
    """``"llama3"``, ``"mistral"`` or a local Hugging Face tokenizer directory."""
    if name == "llama3":
        return Llama3Tokenizer()
    if name == "mistral":
        return SentencePieceTokenizer()
    if isinstance(name, str) and os.path.isdir(name):
        return HFTokenizer(name)
    raise ValueError(f"data.tokenizer: unknown tokenizer {name!r} (known: "
                     f"{', '.join(repr(k) for k in KNOWN)}, or the path of a local Hugging Face "
                     f"tokenizer directory)")
