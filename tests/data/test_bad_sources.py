"""Damaged or misnamed data files and bad mixtures: one error naming the file (issue 12's
reproductions: each raised another exception type, or named no file)."""

import gzip
import json

import pytest

from medjax.data.formats import FormatError, parse
from medjax.data.sources import ConcatSource, DataError, expand_sources, open_file
from medjax.data.validate import source_specs

PAIR = {"prompt": "Dose?", "chosen": "500 mg.", "rejected": "5 g."}


def test_damaged_gzip_files(tmp_path):
    good = gzip.compress(b'{"text": "a"}\n' * 100)
    cases = {"notgzip.jsonl.gz": b'{"text": "a"}\n', "truncated.jsonl.gz": good[:len(good) // 2],
             "corrupt.jsonl.gz": good[:12] + bytes(b ^ 0x55 for b in good[12:])}
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(DataError, match=rf"{name}: not a readable gzip file"):
            open_file(str(tmp_path / name))


def test_damaged_parquet_names_the_file(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(DataError, match=r"x.parquet: not a readable Parquet file"):
        open_file(str(tmp_path / "x.parquet"))


def test_a_directory_named_like_a_file(tmp_path):
    (tmp_path / "x.jsonl").mkdir()
    with pytest.raises(DataError, match=r"x.jsonl: a directory, but not a saved"):
        ConcatSource(expand_sources(str(tmp_path / "x.jsonl")))


@pytest.mark.parametrize("weight", [0, -1, "two", float("inf")])
def test_mixture_weights_must_be_positive(weight):
    with pytest.raises(DataError, match=r"data.sources\[1\].weight=.*positive"):
        source_specs([{"path": "a.jsonl"}, {"path": "b.jsonl", "weight": weight}])


def test_a_pair_missing_a_field_names_it_and_equal_responses_are_refused():
    with pytest.raises(FormatError, match="field 'rejected': is missing"):
        parse({"prompt": "Dose?", "chosen": "500 mg."})
    with pytest.raises(FormatError, match="field 'chosen': is missing"):
        parse({"prompt": "Dose?", "rejected": "500 mg."})
    with pytest.raises(FormatError, match="field 'completion': is missing"):
        parse({"prompt": "Dose?", "label": True})
    with pytest.raises(FormatError, match="field 'rejected': is the same as chosen"):
        parse({**PAIR, "rejected": " 500 mg. "})
    conv = [{"role": "user", "content": "Dose?"}, {"role": "assistant", "content": "500 mg."}]
    with pytest.raises(FormatError, match="field 'rejected': is the same as chosen"):
        parse({"chosen": conv, "rejected": conv})
    assert parse(PAIR)[0] == "preference"


def test_a_jsonl_file_with_equal_pairs_under_skip(tmp_path):
    """Counted and skipped under on_bad_record=skip, like any other bad record."""
    from conftest import load_config
    from medjax.data.validate import SourceSpec, ValidatedSource
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [PAIR] * 99 + [{**PAIR, "rejected":
                                                                       "500 mg."}]))
    c = load_config("dpo", **{"data.on_bad_record": "skip"})
    src = ValidatedSource(SourceSpec(str(f)), c.data, "preference", 0, 1)
    assert len(src) == 99 and src.bad.count == 1 and "p.jsonl:100" in src.bad.examples[0]
