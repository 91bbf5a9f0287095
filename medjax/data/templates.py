"""Chat templates: conversations -> token ids and a per-token loss mask.

``get_template(name, tokenizer)`` (the ``data.template`` config field) returns a
template with:

  ``encode_conversation(messages, *, alpaca=None) -> Encoded(ids, loss_mask)``
      ``loss_mask[i]`` is 1 exactly on the tokens of every assistant message's
      content and on the end-of-turn token(s) that close it; 0 on everything
      else (BOS, headers, system and user turns, generation prompts).
  ``encode_prompt(messages) -> list[int]``
      a conversation ending with a user turn, followed by the generation prompt
      (what comes before the assistant's first content token).
  ``encode_response(text, prompt=None) -> list[int]``
      an assistant response's content ids plus its end-of-turn token(s).

  with ``encode_prompt(p) + encode_response(r) == encode_conversation(p +
  [{"role": "assistant", "content": r}]).ids`` (preference and KTO pairs are
  built from the two parts).

Messages are ``{"role": "system"|"user"|"assistant", "content": str}``. Errors
are ``ValueError``s naming the problem; the caller adds the file and line.

The built-in templates (``llama3``, ``mistral``, ``alpaca``) tokenize segment by
segment -- special tokens by id, each piece of text with ``tokenizer.encode`` --
and never re-tokenize concatenated text, so a prompt's ids are always a prefix
of the prompt-plus-response ids, and text in a message can not turn into a
special token. Message contents are stripped of surrounding whitespace.

``llama3``   ``<|begin_of_text|>``, then per message
             ``<|start_header_id|>ROLE<|end_header_id|>\\n\\n`` CONTENT ``<|eot_id|>``;
             generation prompt: the assistant header; a ``tool`` message takes
             the role ``ipython`` (Llama 3.1's tool output). This is Meta's layout
             (``llama_models`` ``ChatFormat``): the role, the ``"\\n\\n"`` and the
             content are encoded separately.
``mistral``  Mistral-7B-Instruct v0.1, as Mistral's reference library
             (``mistral-common``, instruct tokenizer V1) encodes it:
             ``<s>`` + encode("[INST] USER [/INST]") + encode(ASSISTANT) + ``</s>``
             + encode("[INST] USER2 [/INST]") ... Roles alternate user/assistant
             starting with user; an optional leading system message is put before
             the first user message, separated by a blank line. With
             SentencePiece, each ``encode`` adds its word-start ``▁``, so as a
             string this reads ``<s>[INST] USER [/INST] ASSISTANT</s>[INST] ...``
             where the space after ``[/INST]`` (and the one after ``</s>``) is that
             ``▁``: the answer's first token is ``▁Word``, not ``Word``.
             Generation prompt: nothing (the prompt ends with ``[/INST]``).
``alpaca``   Stanford Alpaca's prompt (``"Below is an instruction..."``, with the
             ``### Input:`` variant when the input is non-empty) ending in
             ``"### Response:\\n"``, preceded by BOS; then the output and EOS,
             trained on. The output is encoded with ``encode_continuation`` (it
             directly follows the newline, as in one string). Single turn only.
``hf``       The tokenizer directory's own Jinja ``chat_template`` through
             ``transformers``' ``apply_chat_template``; see ``HFTemplate``.
"""

from __future__ import annotations

from .hf_template import HFTemplate
from .messages import ROLES, Encoded, check_messages, check_prompt, check_response

__all__ = ["ROLES", "Encoded", "check_messages", "check_prompt", "check_response",
           "HFTemplate", "get_template"]

KNOWN = ("llama3", "mistral", "alpaca", "hf")

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.\n\n")
ALPACA_PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input "
                         "that provides further context. Write a response that appropriately "
                         "completes the request.\n\n")


class ChatTemplate:
    """Base of the segment-wise templates.

    A subclass provides ``_segments(messages)`` -> ``[(ids, trained), ...]``,
    ``_generation_prompt()`` and ``_response(text)`` (content + end of turn).
    """

    name = "?"

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def _segments(self, messages: list[dict]) -> list[tuple[list[int], bool]]:
        raise NotImplementedError

    def _generation_prompt(self) -> list[int]:
        return []

    def _response(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_conversation(self, messages, *, alpaca: dict | None = None) -> Encoded:
        """Ids and loss mask of a conversation with at least one assistant message.

        ``alpaca`` (the ``{"instruction", "input", "output"}`` of an Alpaca record)
        is only used by the ``alpaca`` template.
        """
        msgs = check_messages(messages, self.name)
        if not any(m["role"] == "assistant" for m in msgs):
            raise ValueError(f"{self.name} template: the conversation has no assistant "
                             "message (nothing to train on)")
        ids, mask = [], []
        for seg, trained in self._segments(msgs):
            ids.extend(seg)
            mask.extend([int(trained)] * len(seg))
        return Encoded(ids, mask)

    def encode_prompt(self, messages) -> list[int]:
        """Ids of a conversation ending with a user turn, plus the generation prompt."""
        msgs = check_prompt(messages, self.name)
        ids = [i for seg, _ in self._segments(msgs) for i in seg]
        return ids + self._generation_prompt()

    def encode_response(self, text: str, prompt=None) -> list[int]:
        """An assistant response's ids (content + end of turn), all trained on.

        ``prompt`` is not needed by the built-in templates (a response's ids do not
        depend on what precedes it) and is accepted for ``HFTemplate``'s sake.
        """
        return self._response(check_response(text, self.name))

    def __repr__(self):
        return f"<{type(self).__name__} tokenizer={getattr(self.tok, 'name', '?')!r}>"


class Llama3Template(ChatTemplate):
    """Llama-3 / 3.1 instruct layout (module docstring)."""

    name = "llama3"

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        try:
            self.bos = tokenizer.encode_special("<|begin_of_text|>")
            self.start_header = tokenizer.encode_special("<|start_header_id|>")
            self.end_header = tokenizer.encode_special("<|end_header_id|>")
            self.eot = tokenizer.encode_special("<|eot_id|>")
        except ValueError as e:
            raise ValueError(f"data.template: template 'llama3' needs the Llama-3 special "
                             f"tokens ({e})") from None
        # Llama 3.1 gives tool output the "ipython" role
        self._roles = {r: tokenizer.encode("ipython" if r == "tool" else r) for r in ROLES}
        self._blank = tokenizer.encode("\n\n")

    def _header(self, role: str) -> list[int]:
        return [self.start_header, *self._roles[role], self.end_header, *self._blank]

    def _segments(self, messages):
        segs = [([self.bos], False)]
        for m in messages:
            segs.append((self._header(m["role"]), False))
            segs.append((self.tok.encode(m["content"].strip()) + [self.eot],
                         m["role"] == "assistant"))
        return segs

    def _generation_prompt(self):
        return self._header("assistant")

    def _response(self, text):
        return self.tok.encode(text.strip()) + [self.eot]


class MistralTemplate(ChatTemplate):
    """Mistral-7B-Instruct v0.1 (``[INST] ... [/INST]``), as ``mistral-common`` encodes it."""

    name = "mistral"

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        if tokenizer.bos_id is None or tokenizer.eos_id is None:
            raise ValueError(f"data.template: template 'mistral' needs BOS and EOS tokens; "
                             f"tokenizer {tokenizer.name!r} lacks one")

    def _check_order(self, messages):
        system = None
        turns = list(enumerate(messages))
        if messages[0]["role"] == "system":
            system = messages[0]["content"].strip()
            turns = turns[1:]
        for k, (i, m) in enumerate(turns):
            expected = "user" if k % 2 == 0 else "assistant"
            if m["role"] == "system":
                raise ValueError(f"mistral template: messages[{i}] is a system message; only the "
                                 "first message may be a system message")
            if m["role"] == "tool":
                raise ValueError(f"mistral template: messages[{i}] is a tool message, which "
                                 "Mistral-Instruct v0.1 has no layout for (use data.template=hf "
                                 "with a tokenizer whose chat template has tools)")
            if m["role"] != expected:
                raise ValueError(f"mistral template: messages[{i}] is from the {m['role']} but "
                                 f"the {expected} was expected (roles must alternate "
                                 "user/assistant starting with user, after an optional system "
                                 "message)")
        if not turns:
            raise ValueError("mistral template: a system message must be followed by a user "
                             "message")
        return system, [m for _, m in turns]

    def _segments(self, messages):
        system, turns = self._check_order(messages)
        segs = [([self.tok.bos_id], False)]
        for k, m in enumerate(turns):
            content = m["content"].strip()
            if m["role"] == "user":
                if k == 0 and system:
                    content = f"{system}\n\n{content}"
                segs.append((self.tok.encode(f"[INST] {content} [/INST]"), False))
            else:
                segs.append((self.tok.encode(content) + [self.tok.eos_id], True))
        return segs

    def _response(self, text):
        return self.tok.encode(text.strip()) + [self.tok.eos_id]


class AlpacaTemplate(ChatTemplate):
    """Stanford Alpaca's instruction prompt; one instruction, one response.

    Takes the instruction (and input) from ``alpaca={"instruction", "input",
    "output"}`` when given, else from a ``[user, assistant]`` conversation (the
    user message is the instruction, with no input).
    """

    name = "alpaca"

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        if tokenizer.eos_id is None:
            raise ValueError(f"data.template: template 'alpaca' needs an EOS token; tokenizer "
                             f"{tokenizer.name!r} has none")

    @staticmethod
    def prompt_text(instruction: str, input: str = "") -> str:
        instruction, input = instruction.strip(), (input or "").strip()
        if input:
            return (f"{ALPACA_PREAMBLE_INPUT}### Instruction:\n{instruction}\n\n"
                    f"### Input:\n{input}\n\n### Response:\n")
        return f"{ALPACA_PREAMBLE}### Instruction:\n{instruction}\n\n### Response:\n"

    def _prompt_ids(self, instruction: str, input: str = "") -> list[int]:
        bos = [] if self.tok.bos_id is None else [self.tok.bos_id]
        return bos + self.tok.encode(self.prompt_text(instruction, input))

    def _single_turn(self, msgs, roles):
        got = tuple(m["role"] for m in msgs)
        if got != roles:
            raise ValueError(f"alpaca template: expected messages with roles {list(roles)} "
                             f"(one instruction{', one response' if len(roles) > 1 else ''}; no "
                             f"system message, no further turns), got {list(got)}")

    def encode_conversation(self, messages, *, alpaca: dict | None = None) -> Encoded:
        if alpaca is not None:
            instruction, input = alpaca.get("instruction"), alpaca.get("input") or ""
            output = alpaca.get("output")
            for field, value in (("instruction", instruction), ("input", input),
                                 ("output", output)):
                if not isinstance(value, str):
                    raise ValueError(f"alpaca template: {field} is {type(value).__name__}, "
                                     "expected a string")
            check_response(output, self.name)
        else:
            msgs = check_messages(messages, self.name)
            self._single_turn(msgs, ("user", "assistant"))
            instruction, input, output = msgs[0]["content"], "", msgs[1]["content"]
        prompt = self._prompt_ids(instruction, input)
        response = self._response(output)
        return Encoded(prompt + response, [0] * len(prompt) + [1] * len(response))

    def encode_prompt(self, messages) -> list[int]:
        msgs = check_messages(messages, self.name)
        self._single_turn(msgs, ("user",))
        return self._prompt_ids(msgs[0]["content"])

    def _response(self, text):
        return self.tok.encode_continuation(text.strip()) + [self.tok.eos_id]


TEMPLATES = {"llama3": Llama3Template, "mistral": MistralTemplate, "alpaca": AlpacaTemplate,
             "hf": HFTemplate}


def get_template(name: str, tokenizer):
    """The chat template ``name`` (``data.template``) over ``tokenizer``.

    ``auto``: the tokenizer directory's own template when it has one, else the
    built-in template of the tokenizer's family (``llama3``, ``mistral``).
    """
    if name == "auto":
        if getattr(tokenizer, "chat_template", None):
            name = "hf"
        elif getattr(tokenizer, "name", None) in ("llama3", "mistral"):
            name = tokenizer.name
        else:
            raise ValueError(f"data.template: 'auto' found no chat template in tokenizer "
                             f"{getattr(tokenizer, 'name', '?')!r}; set data.template to one "
                             f"of {', '.join(repr(k) for k in KNOWN)}")
    cls = TEMPLATES.get(name)
    if cls is None:
        raise ValueError(f"data.template: unknown chat template {name!r} (known: "
                         f"{', '.join(repr(k) for k in KNOWN)})")
    return cls(tokenizer)
