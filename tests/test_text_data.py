"""Plain-text pipeline: long documents are split (not truncated), resume, bad records."""

import json

import numpy as np
import pytest

from medjax.data.text import DataError, JsonlSource, text_pipeline
from medjax.data.tokenizer import get_tokenizer


def test_long_documents_are_split_not_truncated(tmp_path):
    tok = get_tokenizer("llama3")
    text = " ".join(f"word{i}" for i in range(300))
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": text}) + "\n")
    want = [tok.bos_id] + tok.encode(text) + [tok.eos_id]
    assert len(want) > 3 * 64
    pipe = text_pipeline(str(tmp_path / "d.jsonl"), tok, seq_len=64, batch_size=1, seed=0,
                         num_epochs=1, shuffle=False, drop_remainder=False)
    got = []
    for b in pipe:
        ids, seg = b["input_ids"][0], b["segment_ids"][0]
        got.extend(ids[seg != 0].tolist())
    assert sorted(got) == sorted(want) and len(got) == len(want)


def test_iterator_state_resumes_with_the_next_batch(tmp_path):
    rs = np.random.RandomState(0)
    with open(tmp_path / "d.jsonl", "w") as f:
        for i in range(50):
            f.write(json.dumps({"text": " ".join(["x"] * rs.randint(5, 120))}) + "\n")
    tok = get_tokenizer("llama3")
    pipe = text_pipeline(str(tmp_path / "d.jsonl"), tok, seq_len=64, batch_size=2, seed=3)
    it = iter(pipe)
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(5)]
    it2 = iter(pipe)
    it2.set_state(state)
    for e in expected:
        g = next(it2)
        for k in e:
            np.testing.assert_array_equal(g[k], e[k])


@pytest.mark.parametrize("line,match", [
    (b'{"text": "ok"', r"d.jsonl:2: malformed JSON"),
    (b'{"txt": "ok"}', r"d.jsonl:2: field 'text' is missing"),
    (b'{"text": 3}', r"d.jsonl:2: field 'text' is int"),
    (b'{"text": "  "}', r"d.jsonl:2: field 'text' is empty"),
    (b'{"text": "\xff"}', r"d.jsonl:2: not valid UTF-8"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, match):
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "fine"}\n' + line + b"\n")
    src = JsonlSource([str(tmp_path / "d.jsonl")])
    assert src[0] == {"text": "fine"}
    with pytest.raises(DataError, match=match):
        src[1]


def test_empty_and_missing_sources(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty dataset"):
        JsonlSource([str(tmp_path / "e.jsonl")])
    with pytest.raises(DataError, match="no file matches"):
        text_pipeline(str(tmp_path / "*.parquet"), None, seq_len=8, batch_size=1, seed=0)
