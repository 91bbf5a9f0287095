"""The tokenizer and chat template a loaded model goes with (``models.load.Model``)."""

from __future__ import annotations


def model_data_tools(model, src: str, tokenizer: str | None = None,
                     template: str | None = None, *, warn=print):
    """(tokenizer, chat template or None) the model was trained with (or those named);
    (None, None) where none can be had (a model that records none, or a tokenizer
    directory not on this machine), with ``warn(message)`` saying why."""
    from .templates import get_template
    from .tokenizer import get_tokenizer

    spec = tokenizer or model.tokenizer
    if not spec:
        warn(f"{src}: the model records no tokenizer; pass --tokenizer=llama3|mistral|DIR "
             "(and --template)")
        return None, None
    try:
        tok = get_tokenizer(spec)
    except (OSError, ValueError, ImportError) as e:
        warn(f"{src}: the tokenizer {spec!r} cannot be loaded ({e})")
        return None, None
    name = template or model.template
    if name is None:  # a base model: only a tokenizer directory's own template, if any
        name = "hf" if getattr(tok, "chat_template", None) else None
    return tok, get_template(name, tok) if name else None
