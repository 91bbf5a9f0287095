"""Logical data shards: the global batch does not depend on the process count, and
the iterator state saved by N processes restores in M processes."""

import json

import numpy as np
import pytest
from etils import epath

from medjax.data.pipeline import pipeline_from_config
from medjax.data.tokenizer import get_tokenizer
from medjax.training.checkpointing import DataShardsHandler
from conftest import load_config


def _global_batches(config, tok, process_count, steps):
    """What `process_count` processes feed, rows of process 0 first, per step."""
    pipes = [pipeline_from_config(config, tok, None, process_index=p, process_count=process_count)
             for p in range(process_count)]
    out = []
    for _ in range(steps):
        locals_ = [next(p) for p in pipes]
        out.append({k: np.concatenate([b[k] for b in locals_]) for k in locals_[0]})
    return out, pipes


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("llama3")


def test_global_batch_is_the_same_on_1_2_and_4_processes(tok):
    config = load_config("pretrain", **{"data.shards": 4, "batch_size": 8, "seq_len": 64})
    one, _ = _global_batches(config, tok, 1, 3)
    for n in (2, 4):
        many, _ = _global_batches(config, tok, n, 3)
        for a, b in zip(one, many):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    # and the shards hold different documents (not one shard repeated)
    rows = one[0]["input_ids"].reshape(4, 2, -1)
    assert len({r.tobytes() for r in rows}) == 4


def test_state_saved_by_2_processes_restores_in_1(tok, tmp_path):
    config = load_config("pretrain", **{"data.shards": 2, "batch_size": 4, "seq_len": 64})
    want, _ = _global_batches(config, tok, 2, 5)
    _, pipes = _global_batches(config, tok, 2, 2)  # 2 processes take 2 steps, then save
    d = epath.Path(tmp_path)
    for p in pipes:
        DataShardsHandler().save(d, p)
    assert sorted(f.name for f in d.iterdir()) == ["shard_0-of-2.json", "shard_1-of-2.json"]
    one = pipeline_from_config(config, tok, None)
    DataShardsHandler().restore(d, one)
    for step in (2, 3, 4):
        got = next(one)
        for k in got:
            np.testing.assert_array_equal(got[k], want[step][k])


def test_restoring_with_another_shard_count_is_a_clear_error(tok, tmp_path):
    config = load_config("pretrain", **{"data.shards": 2, "batch_size": 4, "seq_len": 64})
    d = epath.Path(tmp_path)
    DataShardsHandler().save(d, pipeline_from_config(config, tok, None))
    other = pipeline_from_config(load_config("pretrain", **{"batch_size": 4, "seq_len": 64}),
                                 tok, None)
    with pytest.raises(ValueError, match=r"2 data shards, this run 1.*data.shards=2"):
        DataShardsHandler().restore(d, other)
    json.loads((d / "shard_0-of-2.json").read_text())  # plain JSON a user can inspect


def test_shards_must_divide_batch_and_be_a_multiple_of_processes(tok):
    with pytest.raises(ValueError, match="multiple of the process count 2"):
        pipeline_from_config(load_config("pretrain", **{"data.shards": 3}), tok, None,
                             process_index=0, process_count=2)
    with pytest.raises(ValueError, match="not divisible by data.shards=3"):
        pipeline_from_config(load_config("pretrain", **{"data.shards": 3}), tok, None)
