"""Record formats: normalisation, auto-detection and field-level errors."""

import json

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


# ---------------------------------------------------- layouts TRL users hold (issue 11)
U = [{"role": "user", "content": "Dose?"}]


def _assistant(text):
    return [{"role": "assistant", "content": text}]


def test_trl_conversational_preference_and_kto_layouts():
    """A prompt as messages, each response a list of one assistant message (TRL's
    recommended explicit-prompt layout) was refused as 'turn 0 is assistant'."""
    flat = parse({"prompt": "Dose?", "chosen": "500 mg.", "rejected": "5 g."})
    trl = parse({"prompt": U, "chosen": _assistant("500 mg."), "rejected": _assistant("5 g.")})
    assert trl == flat
    assert parse({"prompt": U, "completion": _assistant("500 mg."), "label": False}) == (
        "kto", {"prompt": U, "completion": "500 mg.", "label": False})
    with pytest.raises(FormatError, match=r"field 'chosen\[0\].role': is 'user'"):
        parse({"prompt": U, "chosen": U, "rejected": _assistant("x")})
    with pytest.raises(FormatError, match="field 'rejected': expected a string or a list of one"):
        parse({"prompt": U, "chosen": _assistant("a"), "rejected": _assistant("b") * 2})


def test_trl_prompt_completion_sft_layout_and_sharegpt_role_keys():
    assert parse({"prompt": U, "completion": _assistant("500 mg.")}) == (
        "prompt_completion", {"messages": U + _assistant("500 mg.")})
    assert parse({"prompt": "Dose?", "completion": "500 mg."})[1] == {
        "messages": U + _assistant("500 mg.")}
    sharegpt = {"conversations": [{"role": "user", "content": "Dose?"},
                                  {"role": "assistant", "content": "500 mg."}]}
    assert parse(sharegpt) == ("sharegpt", {"messages": U + _assistant("500 mg.")})
    with pytest.raises(FormatError, match="field 'completion': is missing"):
        parse({"prompt": "Dose?"}, "prompt_completion")


def test_json_arrays_and_csv_files(tmp_path):
    from medjax.data.sources import DataError, open_file

    records = [{"prompt": "Dose?", "completion": "500 mg.", "label": True},
               {"prompt": "Dose?", "completion": "5 g.", "label": False}]
    (tmp_path / "a.json").write_text(json.dumps(records, indent=2))
    src = open_file(str(tmp_path / "a.json"))
    assert len(src) == 2 and src[1] == (f"{tmp_path}/a.json[1]", records[1])
    (tmp_path / "b.csv").write_text('prompt,completion,label\n"Dose?","500 mg.",true\n'
                                    'Dose?,"5 g., twice",False\n')
    src = open_file(str(tmp_path / "b.csv"))
    assert [w for w, _ in (src[0], src[1])] == [f"{tmp_path}/b.csv:2", f"{tmp_path}/b.csv:3"]
    assert parse(src[1][1]) == ("kto", {"prompt": U, "completion": "5 g., twice",
                                        "label": False})
    (tmp_path / "c.json").write_text('[{"text": "a"},\n {"text": ]')
    with pytest.raises(DataError, match=r"c.json:2: malformed JSON"):
        open_file(str(tmp_path / "c.json"))
    (tmp_path / "d.json").write_text('{"text": "a"}\n{"text": "b"}\n')  # JSON Lines as .json
    assert len(open_file(str(tmp_path / "d.json"))) == 2


def test_data_fields_map_a_datasets_own_names():
    """question/answer columns were refused: no way to name which field is which."""
    from medjax.data.formats import field_map
    fields = field_map("prompt=question,completion=answer")
    assert parse({"question": "Dose?", "answer": "500 mg."}, "auto", fields) == (
        "prompt_completion", {"messages": U + _assistant("500 mg.")})
    with pytest.raises(FormatError, match="field 'answer': is missing"):
        parse({"question": "Dose?"}, "auto", fields)
    with pytest.raises(FormatError, match="cannot tell the format.*data.fields"):
        parse({"question": "Dose?", "answer": "500 mg."})
    # message keys too, and errors in the dataset's own names
    fields = field_map({"messages": "dialog", "role": "speaker", "content": "text"})
    dialog = [{"speaker": "user", "text": "Dose?"}, {"speaker": "assistant", "text": "500 mg."}]
    assert parse({"dialog": dialog}, "auto", fields) == (
        "messages", {"messages": U + _assistant("500 mg.")})
    with pytest.raises(FormatError, match=r"field 'dialog\[1\].speaker': 'bot' is not"):
        parse({"dialog": [dialog[0], {"speaker": "bot", "text": "x"}]}, "auto", fields)
    for bad, msg in [("prompt", "NAME=COLUMN"), ("question=prompt", "not among the names"),
                     (42, "expected a mapping")]:
        with pytest.raises(ValueError, match=msg):
            field_map(bad)


def test_saved_hf_datasets_and_arrow_files(tmp_path):
    """datasets.save_to_disk folders and .arrow files were an unknown file type."""
    datasets = pytest.importorskip("datasets")
    from medjax.data.sources import ConcatSource, DataError, expand_sources, open_file
    rows = [{"prompt": "Dose?", "chosen": "500 mg.", "rejected": "5 g."},
            {"prompt": [{"role": "user", "content": "Dose?"}],
             "chosen": [{"role": "assistant", "content": "500 mg."}],
             "rejected": [{"role": "assistant", "content": "5 g."}]}]
    for i, r in enumerate(rows):
        datasets.Dataset.from_list([r] * 3).save_to_disk(str(tmp_path / f"ds{i}"))
        src = ConcatSource(expand_sources(str(tmp_path / f"ds{i}")))
        assert len(src) == 3
        where, record = src[2]
        assert where.endswith(".arrow#2")
        assert parse(record)[1] == {"prompt": U, "chosen": "500 mg.", "rejected": "5 g."}
    arrow = expand_sources(str(tmp_path / "ds0"))[0]
    assert arrow.endswith(".arrow") and len(open_file(arrow)) == 3
    whole = datasets.DatasetDict(train=datasets.Dataset.from_list(rows[:1]),
                                 test=datasets.Dataset.from_list(rows[:1]))
    whole.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"DatasetDict with splits \['test', 'train'\].*dd/train"):
        expand_sources(str(tmp_path / "dd"))
    assert len(ConcatSource(expand_sources(str(tmp_path / "dd" / "train")))) == 1
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a saved Hugging Face dataset"):
        expand_sources(str(tmp_path / "plain"))
    (tmp_path / "bad.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(DataError, match="bad.arrow: not a readable Arrow file"):
        open_file(str(tmp_path / "bad.arrow"))


def test_tool_messages():
    """A tool role (a tool's output after the assistant's call) was refused."""
    conv = [{"role": "user", "content": "Dose?"}, {"role": "assistant", "content": "call"},
            {"role": "tool", "content": "42"}, {"role": "tool", "content": "43"},
            {"role": "assistant", "content": "42 mg."}]
    assert parse({"messages": conv}) == ("messages", {"messages": conv})
    sharegpt = {"conversations": [{"from": "human", "value": "Dose?"},
                                  {"from": "function_call", "value": "call"},
                                  {"from": "observation", "value": "42"},
                                  {"from": "gpt", "value": "42 mg."}]}
    assert [m["role"] for m in parse(sharegpt)[1]["messages"]] == [
        "user", "assistant", "tool", "assistant"]
    for bad in ([conv[0], conv[2], conv[4]], [conv[2], conv[4]], conv[:3]):
        with pytest.raises(FormatError, match="field 'messages'"):
            parse({"messages": bad})
    # a preference prompt may end with a tool's output
    pref = parse({"prompt": conv[:3], "chosen": "42 mg.", "rejected": "4 g."})[1]
    assert pref["prompt"] == conv[:3]
