"""Record formats: normalisation, auto-detection and field-level errors."""

import pytest

from medjax.data.formats import FormatError, detect_format, parse

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Dose?"},
        {"role": "assistant", "content": "500 mg."}]


def test_each_format_normalises():
    assert parse({"text": "abc"}) == ("text", {"text": "abc"})
    assert parse({"messages": CHAT}) == ("messages", {"messages": CHAT})
    sharegpt = {"id": "1", "conversations": [{"from": "system", "value": "Be brief."},
                                             {"from": "human", "value": "Dose?"},
                                             {"from": "gpt", "value": "500 mg."}]}
    assert parse(sharegpt) == ("sharegpt", {"messages": CHAT})
    fmt, ex = parse({"instruction": "Name a statin.", "input": "", "output": "Atorvastatin."})
    assert fmt == "alpaca" and ex["messages"][0] == {"role": "user", "content": "Name a statin."}
    assert ex["alpaca"]["output"] == "Atorvastatin."
    _, ex = parse({"instruction": "Classify.", "input": "metformin", "output": "Biguanide."})
    assert ex["messages"][0]["content"] == "Classify.\n\nmetformin"


def test_preference_both_layouts_agree():
    flat = {"prompt": "Dose?", "chosen": "500 mg.", "rejected": "5 g."}
    full = {"chosen": [{"role": "user", "content": "Dose?"},
                       {"role": "assistant", "content": "500 mg."}],
            "rejected": [{"role": "user", "content": "Dose?"},
                         {"role": "assistant", "content": "5 g."}]}
    assert parse(flat) == parse(full) == ("preference", {
        "prompt": [{"role": "user", "content": "Dose?"}], "chosen": "500 mg.", "rejected": "5 g."})
    full["rejected"][0]["content"] = "Other question?"
    with pytest.raises(FormatError, match="share every message but the last"):
        parse(full)


def test_kto():
    assert parse({"prompt": "Dose?", "completion": "500 mg.", "label": True})[1]["label"] is True
    with pytest.raises(FormatError, match="'label'.*expected true or false"):
        parse({"prompt": "Dose?", "completion": "500 mg.", "label": "yes"})


@pytest.mark.parametrize("record,field", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     "messages"),
    ({"messages": [{"role": "user", "content": "a"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
     "messages[1].content"),
    ({"messages": [{"role": "doctor", "content": "a"}]}, "messages[0].role"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]},
     "conversations[1].from"),
    ({"instruction": "a", "output": ""}, "output"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen"),
])
def test_errors_name_the_field(record, field):
    with pytest.raises(FormatError) as e:
        parse(record)
    assert e.value.field == field


def test_detection():
    assert detect_format({"conversations": [], "id": 1}) == "sharegpt"
    assert detect_format({"prompt": "", "completion": "", "label": True}) == "kto"
    with pytest.raises(FormatError, match="cannot tell the format"):
        detect_format({"question": "?"})
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        parse({"text": "a"}, "csv")
