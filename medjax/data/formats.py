"""Record formats: raw JSON-like records -> normalised examples, with validation.

Every parser takes a record (a dict) and returns a normalised example or raises
``FormatError(field, message)``; the source adds the file and line. Formats
(``data.format``, or ``auto`` to detect from the fields):

  text        {"text": str}                                   -> {"text"}
  messages    {"messages": [{"role", "content"}, ...]}       -> {"messages"}
  sharegpt    {"conversations": [{"from", "value"}, ...]}    -> {"messages"}
  sharegpt    (turns with "role"/"content" keys are read too)
  alpaca      {"instruction", "input"?, "output"}            -> {"messages", "alpaca"}
  prompt_completion  {"prompt", "completion"} (TRL's SFT layout) -> {"messages"}
  preference  {"prompt"?, "chosen", "rejected"}              -> {"prompt", "chosen", "rejected"}
              (strings, or TRL's conversational layout: a prompt as a message list
              and each response as a list of one assistant message; without
              "prompt", chosen/rejected are full conversations whose last message
              is the assistant response)
  kto         {"prompt", "completion", "label": bool}        -> {"prompt", "completion", "label"}

Normalised conversations are lists of ``{"role": "system"|"user"|"assistant"|"tool",
"content": str}`` (a ``tool`` message holds a tool's output, after the assistant
message that called it; it is context, never trained on); preference/KTO prompts
are conversations ending with a user (or tool) turn and responses are assistant
strings.
"""

from __future__ import annotations

from typing import Any, Callable

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "tool": "tool", "observation": "tool",
                  "function_call": "assistant"}
# After each role, the roles that may come next (after an optional system message; the
# first turn is the user's): a tool message answers an assistant's tool call, and the
# assistant then goes on.
NEXT = {"user": ("assistant",), "assistant": ("user", "tool"), "tool": ("tool", "assistant")}


class FormatError(ValueError):
    """A record that does not match its format; ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{field}': {message}")
        self.field = field


def _string(record: dict, field: str, *, allow_empty: bool = False) -> str:
    value = record.get(field)
    if value is None:
        raise FormatError(field, "is missing")
    if not isinstance(value, str):
        raise FormatError(field, f"is {type(value).__name__}, expected a string")
    if not allow_empty and not value.strip():
        raise FormatError(field, "is empty")
    return value


def check_conversation(messages: list, field: str, *,
                       ends_with: tuple[str, ...] | None = ("assistant",)) -> list:
    """Validates roles and contents; returns the list of {role, content} dicts."""
    if not isinstance(messages, list) or not messages:
        raise FormatError(field, "must be a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise FormatError(where, f"is {type(m).__name__}, expected an object")
        role = m.get("role")
        if role not in ROLES:
            raise FormatError(f"{where}.role", f"{role!r} is not one of {ROLES}")
        content = m.get("content")
        if not isinstance(content, str):
            raise FormatError(f"{where}.content", "is missing or not a string")
        if role == "assistant" and not content.strip():
            raise FormatError(f"{where}.content", "empty assistant response")
        if role == "system" and i != 0:
            raise FormatError(f"{where}.role", "a system message must come first")
        out.append({"role": role, "content": content})
    turns = [m["role"] for m in out if m["role"] != "system"]
    for i, role in enumerate(turns):
        allowed = ("user",) if i == 0 else NEXT[turns[i - 1]]
        if role not in allowed:
            raise FormatError(field, f"roles must alternate user/assistant after an optional "
                              f"system message (tool messages only after an assistant "
                              f"message); turn {i} is {role!r}")
    if ends_with and (not turns or turns[-1] not in ends_with):
        raise FormatError(field, f"the last message must be from the {' or '.join(ends_with)}")
    return out


def parse_text(record: dict) -> dict:
    return {"text": _string(record, "text")}


def parse_messages(record: dict) -> dict:
    return {"messages": check_conversation(record.get("messages"), "messages")}


def parse_sharegpt(record: dict) -> dict:
    """ShareGPT turns: ``{"from", "value"}``, or ``{"role", "content"}`` as some exports have."""
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise FormatError("conversations", "must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise FormatError(f"conversations[{i}]", "expected an object")
        if "from" not in turn and "role" in turn:
            turn = {"from": turn["role"], "value": turn.get("content")}
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise FormatError(f"conversations[{i}].from", f"{turn.get('from')!r} is not one of "
                              f"{sorted(SHAREGPT_ROLES)}")
        messages.append({"role": role, "content": turn.get("value")})
    try:
        return {"messages": check_conversation(messages, "conversations")}
    except FormatError as e:  # report ShareGPT's own field names
        raise FormatError(e.field.replace(".role", ".from").replace(".content", ".value"),
                          str(e).split(": ", 1)[1]) from None


def parse_alpaca(record: dict) -> dict:
    instruction = _string(record, "instruction")
    inp = record.get("input") or ""
    if not isinstance(inp, str):
        raise FormatError("input", f"is {type(inp).__name__}, expected a string")
    output = _string(record, "output")
    user = instruction if not inp.strip() else f"{instruction}\n\n{inp}"
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": output}],
            "alpaca": {"instruction": instruction, "input": inp, "output": output}}


def _prompt(value: Any, field: str) -> list:
    if isinstance(value, str):
        if not value.strip():
            raise FormatError(field, "is empty")
        return [{"role": "user", "content": value}]
    return check_conversation(value, field, ends_with=("user", "tool"))


def _response(value: Any, field: str) -> str:
    """A response: a string, or (TRL's conversational layout) a list holding one
    assistant message."""
    if isinstance(value, str):
        if not value.strip():
            raise FormatError(field, "empty response")
        return value
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise FormatError(field, "expected a string or a list of one assistant message")
    role, content = value[0].get("role"), value[0].get("content")
    if role != "assistant":
        raise FormatError(f"{field}[0].role", f"is {role!r}, expected 'assistant'")
    if not isinstance(content, str) or not content.strip():
        raise FormatError(f"{field}[0].content", "is missing, empty or not a string")
    return content


def parse_prompt_completion(record: dict) -> dict:
    """TRL's prompt-completion SFT layout: the completion is trained on, the prompt not."""
    for f in ("prompt", "completion"):
        if f not in record:
            raise FormatError(f, "is missing")
    return {"messages": _prompt(record["prompt"], "prompt") + [
        {"role": "assistant", "content": _response(record["completion"], "completion")}]}


def parse_preference(record: dict) -> dict:
    for f in ("chosen", "rejected"):
        if f not in record:
            raise FormatError(f, "is missing")
    if "prompt" in record:
        prompt = _prompt(record["prompt"], "prompt")
        chosen = _response(record["chosen"], "chosen")
        rejected = _response(record["rejected"], "rejected")
        if chosen.strip() == rejected.strip():
            raise FormatError("rejected", "is the same as chosen (a pair must differ)")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    # Full conversations: shared prompt, different last assistant message.
    chosen = check_conversation(record["chosen"], "chosen")
    rejected = check_conversation(record["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise FormatError("rejected", "chosen and rejected conversations must share every "
                          "message but the last")
    if len(chosen) < 2:
        raise FormatError("chosen", "a full conversation needs a prompt before the response")
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        raise FormatError("rejected", "is the same as chosen (a pair must differ)")
    return {"prompt": chosen[:-1], "chosen": chosen[-1]["content"],
            "rejected": rejected[-1]["content"]}


def parse_kto(record: dict) -> dict:
    label = record.get("label")
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):  # CSV cells
        label = label.strip().lower() == "true"
    if not isinstance(label, bool):
        raise FormatError("label", f"is {label!r}, expected true or false")
    if "completion" not in record:
        raise FormatError("completion", "is missing")
    if "prompt" not in record:
        raise FormatError("prompt", "is missing")
    return {"prompt": _prompt(record["prompt"], "prompt"),
            "completion": _response(record["completion"], "completion"), "label": label}


PARSERS: dict[str, Callable[[dict], dict]] = {
    "text": parse_text, "messages": parse_messages, "sharegpt": parse_sharegpt,
    "alpaca": parse_alpaca, "prompt_completion": parse_prompt_completion,
    "preference": parse_preference, "kto": parse_kto,
}
# Which normalised kinds an objective can train on.
KIND = {"text": "text", "messages": "chat", "sharegpt": "chat", "alpaca": "chat",
        "prompt_completion": "chat", "preference": "preference", "kto": "kto"}


def detect_format(record: dict) -> str:
    """The format of a record from its fields (for ``data.format = "auto"``)."""
    if not isinstance(record, dict):
        raise FormatError("(record)", f"expected a JSON object, got {type(record).__name__}")
    keys = set(record)
    if "chosen" in keys or "rejected" in keys:  # one missing: parse_preference names it
        return "preference"
    if "label" in keys and ("completion" in keys or "prompt" in keys):
        return "kto"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "messages"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "text" in keys:
        return "text"
    raise FormatError("(record)", f"cannot tell the format from fields {sorted(keys)}; set "
                      "data.format (text, messages, sharegpt, alpaca, prompt_completion, "
                      "preference, kto), or map your field names with data.fields (e.g. "
                      "prompt=question,completion=answer)")


# Field names ``data.fields`` may map to a dataset's own names (role and content: the keys
# inside each message).
FIELD_NAMES = ("text", "messages", "conversations", "instruction", "input", "output", "prompt",
               "completion", "chosen", "rejected", "label", "role", "content")
_MESSAGE_LISTS = ("messages", "conversations", "prompt", "completion", "chosen", "rejected")


def field_map(fields: Any) -> dict[str, str]:
    """``data.fields``: ``{medjax name: the dataset's name}``, as a mapping or as a string
    ``"prompt=question,completion=answer"``; {} when empty."""
    if not fields:
        return {}
    if isinstance(fields, str):
        pairs = [p.partition("=") for p in fields.split(",") if p.strip()]
        if any(not eq or not v.strip() for _, eq, v in pairs):
            raise ValueError(f"data.fields={fields!r}: expected NAME=COLUMN pairs separated "
                             "by commas, e.g. prompt=question,completion=answer")
        fields = {k.strip(): v.strip() for k, _, v in pairs}
    try:
        fields = {str(k): str(v) for k, v in dict(fields).items()}
    except (TypeError, ValueError):
        raise ValueError(f"data.fields={fields!r}: expected a mapping or NAME=COLUMN pairs, "
                         "e.g. prompt=question,completion=answer") from None
    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"data.fields: {unknown} not among the names it can map "
                         f"({', '.join(FIELD_NAMES)})")
    return fields


def _rename(record: dict, fields: dict[str, str]) -> dict:
    """The dataset's field names -> medjax's (``fields``: medjax name -> dataset name)."""
    top = {theirs: ours for ours, theirs in fields.items() if ours not in ("role", "content")}
    out = {top.get(k, k): v for k, v in record.items()}
    inner = {fields[k]: k for k in ("role", "content") if k in fields}
    if inner:
        for k in _MESSAGE_LISTS:
            if isinstance(out.get(k), list):
                out[k] = [{inner.get(a, a): b for a, b in m.items()} if isinstance(m, dict)
                          else m for m in out[k]]
    return out


def _their_field(field: str, fields: dict[str, str]) -> str:
    """A field path in medjax's names -> the dataset's (for error messages)."""
    head, sep, rest = field.partition("[")
    head = fields.get(head, head) if head not in ("role", "content") else head
    for k in ("role", "content"):
        if k in fields:
            rest = rest.replace(f".{k}", f".{fields[k]}")
    return head + sep + rest


def parse(record: dict, fmt: str = "auto", fields: dict[str, str] | None = None
          ) -> tuple[str, dict]:
    """(format, normalised example) of ``record``; ``fields`` maps medjax's field names
    to the record's (``field_map``), and errors name the record's own fields."""
    if not isinstance(record, dict):
        raise FormatError("(record)", f"expected a JSON object, got {type(record).__name__}")
    if fields:
        try:
            record = _rename(record, fields)
            if fmt == "auto":  # a record missing a mapped field: the mapping tells the format
                try:
                    fmt = detect_format(record)
                except FormatError:
                    fmt = detect_format({k: None for k in fields if k not in ("role", "content")})
            return parse(record, fmt)
        except FormatError as e:
            raise FormatError(_their_field(e.field, fields), str(e).split(": ", 1)[1]) from None
    if fmt == "auto":
        fmt = detect_format(record)
    if fmt not in PARSERS:
        raise ValueError(f"data.format: unknown format {fmt!r} (known: auto, {', '.join(PARSERS)})")
    return fmt, PARSERS[fmt](record)
