"""Messages of a conversation: the checks every chat template applies, and the encoded
form a template returns."""

from __future__ import annotations

from typing import NamedTuple

ROLES = ("system", "user", "assistant", "tool")


class Encoded(NamedTuple):
    ids: list[int]
    loss_mask: list[int]


def check_messages(messages, template: str) -> list[dict]:
    """Roles and contents are well-formed; returns ``[{"role", "content"}, ...]``."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{template} template: expected a non-empty list of messages, "
                         f"got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"{template} template: messages[{i}] is {type(m).__name__}, "
                             "expected a dict with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"{template} template: messages[{i}].role is {role!r}, "
                             f"expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"{template} template: messages[{i}].content is "
                             f"{type(content).__name__}, expected a string")
        if role == "assistant" and not content.strip():
            raise ValueError(f"{template} template: messages[{i}] is an empty assistant message")
        out.append({"role": role, "content": content})
    return out


def check_prompt(messages, template: str) -> list[dict]:
    """``check_messages`` for a prompt, which must end with a user (or tool) turn."""
    msgs = check_messages(messages, template)
    if msgs[-1]["role"] not in ("user", "tool"):
        raise ValueError(f"{template} template: a prompt must end with a user or tool "
                         f"message, its last message is from the {msgs[-1]['role']}")
    return msgs


def check_response(text, template: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{template} template: the response is {type(text).__name__}, "
                         "expected a string")
    if not text.strip():
        raise ValueError(f"{template} template: empty assistant response")
    return text
