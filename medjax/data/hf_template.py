"""The ``hf`` chat template: a Hugging Face tokenizer directory's own Jinja template."""

from __future__ import annotations

from .messages import Encoded, check_messages, check_prompt, check_response


class HFTemplate:
    """A Hugging Face tokenizer directory's own Jinja chat template.

    Ids are ``apply_chat_template(messages, tokenize=True)`` (the whole rendered
    string tokenized by ``transformers``, control-token strings inside message
    contents kept as text via ``sanitize_control_tokens``). The loss mask is
    found from prefixes: for the assistant message at index k, the tokens
    between ``render(messages[:k], add_generation_prompt=True)`` and
    ``render(messages[:k+1])`` are trained on.

    Limitations: (1) the template must be prefix-stable -- rendering a shorter
    conversation must give a token prefix of the longer one. Templates that
    render earlier turns differently from the last one (e.g. dropping past
    reasoning), or whose tokenization merges across a turn boundary, are
    rejected with a ValueError rather than given a wrong mask. (2) The mask
    covers everything the template emits for the assistant turn after the
    generation prompt, so a template that writes e.g. ``"\\n"`` after its
    end-of-turn token trains on that too. (3) A conversation may not start with
    an assistant message. (4) Rendering is quadratic in the number of turns.
    (5) ``encode_response(text)`` without ``prompt`` renders it after a one-word
    user message; pass ``prompt=`` when the template's assistant turn depends on
    the history.
    """

    name = "hf"

    def __init__(self, tokenizer):
        hf = getattr(tokenizer, "hf", None)
        if hf is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"data.template: template 'hf' needs a Hugging Face tokenizer "
                             f"directory with a chat_template as data.tokenizer; "
                             f"{getattr(tokenizer, 'name', tokenizer)!r} has none")
        self.tok = tokenizer
        self.hf = hf

    def _render(self, messages, generation_prompt: bool) -> list[int]:
        if not messages:
            return []
        ids = self.hf.apply_chat_template(list(messages), tokenize=True, return_dict=False,
                                          add_generation_prompt=generation_prompt,
                                          sanitize_control_tokens=True)
        return [int(i) for i in ids]

    def _prefix(self, ids, full, what):
        if full[:len(ids)] != ids:
            raise ValueError(f"hf template: {what} is not a token prefix of the whole "
                             "conversation, so the loss mask can not be computed from prefixes "
                             "(the chat template renders earlier turns differently, or the "
                             "tokenizer merges across a turn boundary)")
        return len(ids)

    def encode_conversation(self, messages, *, alpaca: dict | None = None) -> Encoded:
        msgs = check_messages(messages, self.name)
        if msgs[0]["role"] == "assistant":
            raise ValueError("hf template: the conversation starts with an assistant message")
        if not any(m["role"] == "assistant" for m in msgs):
            raise ValueError("hf template: the conversation has no assistant message "
                             "(nothing to train on)")
        full = self._render(msgs, False)
        mask = [0] * len(full)
        for k, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            start = self._prefix(self._render(msgs[:k], True), full,
                                 f"the prompt before messages[{k}]")
            end = self._prefix(self._render(msgs[:k + 1], False), full,
                               f"the conversation up to messages[{k}]")
            if end <= start:
                raise ValueError(f"hf template: messages[{k}] renders to no tokens")
            mask[start:end] = [1] * (end - start)
        return Encoded(full, mask)

    def encode_prompt(self, messages) -> list[int]:
        return self._render(check_prompt(messages, self.name), True)

    def encode_response(self, text: str, prompt=None) -> list[int]:
        text = check_response(text, self.name)
        prompt = check_messages(prompt, self.name) if prompt else [
            {"role": "user", "content": "Hi"}]
        head = self._render(prompt, True)
        full = self._render(prompt + [{"role": "assistant", "content": text}], False)
        return full[self._prefix(head, full, "the prompt"):]

    def __repr__(self):
        return f"<HFTemplate tokenizer={self.tok.name!r}>"
