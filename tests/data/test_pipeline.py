"""The data pipeline: splitting, packing, resume, sharding, mixtures, bad records."""

import json

import ml_collections
import numpy as np
import pytest

from medjax.data.pipeline import build_pipeline
from medjax.data.sources import ConcatSource, DataError, JsonlSource
from medjax.data.tokenizer import get_tokenizer


def data_cfg(**kw):
    base = dict(sources="", format="auto", on_bad_record="error", max_bad_fraction=0.01,
                num_workers=0,
                max_prompt_length=16, truncation_mode="keep_end")
    return ml_collections.ConfigDict({**base, **kw})


def text_pipeline(sources, tok, *, seq_len, batch_size, seed, num_epochs=None, shuffle=True,
                  drop_remainder=True, process_index=0, process_count=1, **cfg):
    return build_pipeline(data_cfg(sources=sources, **cfg), tok, None, objective="pretrain",
                          seq_len=seq_len, batch_size=batch_size, seed=seed,
                          num_epochs=num_epochs, shuffle=shuffle, drop_remainder=drop_remainder,
                          process_index=process_index, process_count=process_count)


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
    (b'{"txt": "ok"}', r"d.jsonl:2: .*cannot tell the format"),
    (b'{"text": 3}', r"d.jsonl:2: field 'text': is int"),
    (b'{"text": "  "}', r"d.jsonl:2: field 'text': is empty"),
    (b'{"text": "\xff"}', r"d.jsonl:2: not valid UTF-8"),
    (b'[1, 2]', r"d.jsonl:2: expected a JSON object"),
    (b'{"prompt": "q", "chosen": "a", "rejected": "b"}', r"d.jsonl:2: a 'preference' record "
     r"cannot train a 'text' objective"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, match):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "fine"}\n' + line + b"\n" + b'{"text": "also fine"}\n' * 98)
    tok = get_tokenizer("llama3")
    with pytest.raises(DataError, match=match):
        text_pipeline(str(path), tok, seq_len=16, batch_size=1, seed=0)
    # skip: the bad record is dropped and counted; one in 100 is within 1% ...
    pipe = text_pipeline(str(path), tok, seq_len=16, batch_size=1, seed=0, num_epochs=1,
                         shuffle=False, drop_remainder=False, on_bad_record="skip")
    docs = sum(len(set(b["segment_ids"][0].tolist()) - {0}) for b in pipe)
    assert docs == 99
    # ... but not within 0.5%.
    with pytest.raises(DataError, match="1 of 100 records are bad"):
        text_pipeline(str(path), tok, seq_len=16, batch_size=1, seed=0, on_bad_record="skip",
                      max_bad_fraction=0.005)


def test_empty_and_missing_sources(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty dataset"):
        ConcatSource([str(tmp_path / "e.jsonl")])
    with pytest.raises(DataError, match="no file matches"):
        text_pipeline(str(tmp_path / "*.parquet"), None, seq_len=8, batch_size=1, seed=0)
    assert len(JsonlSource(str(tmp_path / "e.jsonl"))) == 0


def test_processes_read_disjoint_shards_that_cover_the_data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n"
                            for i in range(37)))
    tok = get_tokenizer("llama3")
    seen = []
    for pi in range(2):
        pipe = text_pipeline(str(path), tok, seq_len=64, batch_size=1, seed=0, num_epochs=1,
                             drop_remainder=False, process_index=pi, process_count=2)
        docs = set()
        for b in pipe:
            ids, seg = b["input_ids"][0], b["segment_ids"][0]
            for s in set(seg[seg > 0].tolist()):
                docs.add(tok.decode(ids[seg == s][1:-1].tolist()))
        seen.append(docs)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"document number {i}" for i in range(37)}


def test_weighted_mixture_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    a, b = tmp_path / "a.jsonl", tmp_path / "b.parquet"
    a.write_text("".join(json.dumps({"text": "alpha"}) + "\n" for _ in range(50)))
    pq.write_table(pa.table({"text": ["beta"] * 50}), b, row_group_size=7)
    tok = get_tokenizer("llama3")
    alpha = tok.encode("alpha")[0]
    pipe = build_pipeline(
        data_cfg(sources=[{"path": str(a), "weight": 3.0}, {"path": str(b), "weight": 1.0}]),
        tok, None, objective="pretrain", seq_len=4, batch_size=1, seed=0)
    it = iter(pipe)
    first = [int(next(it)["input_ids"][0, 1] == alpha) for _ in range(400)]
    assert 0.68 < np.mean(first) < 0.82  # about 3 of 4 rows from the weight-3 source


def test_worker_processes_give_the_same_batches(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"patient {i} takes {i % 7} tablets daily"})
                            + "\n" for i in range(60)))
    tok = get_tokenizer("llama3")
    out = []
    for workers in (0, 2):
        pipe = build_pipeline(data_cfg(sources=str(path)), tok, None, objective="pretrain",
                              seq_len=32, batch_size=2, seed=1, num_epochs=1,
                              num_workers=workers)
        out.append([b["input_ids"] for b in pipe])
    assert len(out[0]) == len(out[1]) > 5
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_sft_packs_conversations_and_trains_on_assistant_tokens_only(tmp_path):
    from medjax.data.templates import get_template
    tok = get_tokenizer("llama3")
    tpl = get_template("llama3", tok)
    records = [{"conversations": [{"from": "human", "value": f"Dose of drug {i}?"},
                                  {"from": "gpt", "value": f"Take {i} mg."},
                                  {"from": "human", "value": "Why?"},
                                  {"from": "gpt", "value": "It works."}]} for i in range(20)]
    src = _write(tmp_path / "sft.jsonl", records)
    pipe = build_pipeline(data_cfg(sources=src), tok, tpl, objective="sft", seq_len=96,
                          batch_size=2, seed=0, num_epochs=1, drop_remainder=False)
    answers = []
    for b in pipe:
        for ids, seg, pos, mask in zip(b["input_ids"], b["segment_ids"], b["positions"],
                                       b["loss_mask"]):
            for s in set(seg.tolist()) - {0}:
                where = np.flatnonzero(seg == s)
                assert np.array_equal(where, np.arange(where[0], where[-1] + 1))  # contiguous
                assert np.array_equal(pos[where], np.arange(len(where)))  # positions restart
                assert ids[where[0]] == tok.bos_id
                trained = tok.decode(ids[where][mask[where] == 1].tolist())
                answers.append(trained)
            assert not mask[seg == 0].any()
    assert len(answers) == 20
    for i in range(20):
        assert f"Take {i} mg.<|eot_id|>It works.<|eot_id|>" in answers


def test_preference_rows_truncation_and_dropped_prompts(tmp_path):
    from medjax.data.templates import get_template
    tok = get_tokenizer("llama3")
    tpl = get_template("llama3", tok)
    long_prompt = " ".join(f"w{i}" for i in range(40))
    records = [{"prompt": "Which drug is a statin?", "chosen": "Atorvastatin.",
                "rejected": "Metformin."},
               {"prompt": long_prompt, "chosen": "Yes.", "rejected": "No."}]
    src = _write(tmp_path / "pref.jsonl", records)
    cfg = data_cfg(sources=src, max_prompt_length=20)

    def rows(**kw):
        pipe = build_pipeline(data_cfg(**{**cfg, **kw}), tok, tpl, objective="dpo",
                              seq_len=32, batch_size=1, seed=0, num_epochs=1, shuffle=False,
                              drop_remainder=False)
        return list(pipe)

    batches = rows()
    assert len(batches) == 2 and batches[0]["input_ids"].shape == (1, 2, 32)
    b = batches[0]
    prompt = tpl.encode_prompt([{"role": "user", "content": "Which drug is a statin?"}])
    n = len(prompt)
    for r, answer in ((0, "Atorvastatin."), (1, "Metformin.")):
        ids, mask = b["input_ids"][0, r], b["loss_mask"][0, r]
        assert ids[:n].tolist() == prompt and not mask[:n].any()
        resp = tpl.encode_response(answer)
        assert ids[n:n + len(resp)].tolist() == resp and mask[n:n + len(resp)].all()
        assert not mask[n + len(resp):].any()
    # A prompt over max_prompt_length keeps its end (keep_end) or its start (keep_start).
    full = tpl.encode_prompt([{"role": "user", "content": long_prompt}])
    end = batches[1]["input_ids"][0, 0, :20].tolist()
    assert end == full[-20:]
    start = rows(truncation_mode="keep_start")[1]["input_ids"][0, 0, :20].tolist()
    assert start == full[:20]
    # A prompt that leaves no room for a response is dropped, not cut into a prompt-only row.
    cfg_small = data_cfg(sources=src, max_prompt_length=64)
    pipe = build_pipeline(cfg_small, tok, tpl, objective="dpo", seq_len=24, batch_size=1,
                          seed=0, num_epochs=1, shuffle=False, drop_remainder=False)
    assert len(list(pipe)) == 1


def test_kto_rows_pair_each_prompt_with_the_next_completion(tmp_path):
    from medjax.data.templates import get_template
    tok = get_tokenizer("llama3")
    tpl = get_template("llama3", tok)
    records = [{"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": i % 2 == 0}
               for i in range(6)]
    src = _write(tmp_path / "kto.jsonl", records)
    pipe = build_pipeline(data_cfg(sources=src), tok, tpl, objective="kto", seq_len=40,
                          batch_size=3, seed=0, num_epochs=1, shuffle=False)
    batches = list(pipe)
    assert len(batches) == 2
    b = batches[0]
    assert b["input_ids"].shape == (3, 2, 40) and b["label"].tolist() == [True, False, True]
    for i in range(3):
        prompt = tpl.encode_prompt([{"role": "user", "content": f"Question {i}?"}])
        for r, j in ((0, i), (1, (i + 1) % 3)):
            resp = tpl.encode_response(f"Answer {j}.")
            ids, mask = b["input_ids"][i, r], b["loss_mask"][i, r]
            assert ids[:len(prompt) + len(resp)].tolist() == prompt + resp
            assert mask.sum() == len(resp) and mask[len(prompt)] == 1


def test_template_objections_stop_before_training(tmp_path, caplog):
    from medjax.data.templates import get_template
    tok = get_tokenizer("llama3")
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2
    src = _write(tmp_path / "sft.jsonl", [{"messages": turns[:2]}, {"messages": turns}])
    with pytest.raises(DataError, match=r"sft.jsonl:2: the alpaca template takes one user"):
        build_pipeline(data_cfg(sources=src), tok, get_template("alpaca", tok), objective="sft",
                       seq_len=64, batch_size=1, seed=0)
    # Prompts that leave no room are dropped and the count is logged.
    src = _write(tmp_path / "p.jsonl", [{"prompt": "short", "chosen": "a", "rejected": "b"},
                                        {"prompt": "word " * 50, "chosen": "a", "rejected": "b"}])
    with caplog.at_level("WARNING"):
        build_pipeline(data_cfg(sources=src, max_prompt_length=100), tok,
                       get_template("llama3", tok), objective="dpo", seq_len=32, batch_size=1,
                       seed=0)
    assert "dropped 1 of 2 examples" in caplog.text and "p.jsonl:2" in caplog.text


def test_arrayrecord_source_and_auto_template(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter
    from medjax.data.sources import open_file
    from medjax.data.templates import get_template
    w = ArrayRecordWriter(str(tmp_path / "d.arrayrecord"), "group_size:1")
    for i in range(5):
        w.write(json.dumps({"text": f"record {i}"}).encode())
    w.write(b"not json")
    w.close()
    src = open_file(str(tmp_path / "d.arrayrecord"))
    assert len(src) == 6 and src[3] == (f"{tmp_path}/d.arrayrecord#3", {"text": "record 3"})
    assert isinstance(src[5][1], DataError) and "#5: malformed JSON" in str(src[5][1])
    tok = get_tokenizer("llama3")
    assert get_template("auto", tok).name == "llama3"
    assert get_template("auto", get_tokenizer("mistral")).name == "mistral"
