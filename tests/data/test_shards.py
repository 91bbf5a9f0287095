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


def test_global_batch_is_the_same_on_1_2_4_and_8_processes_by_default(tok):
    """data.shards left at its default: the global batch does not depend on the number
    of processes (before, the default was one shard per process)."""
    config = load_config("pretrain", **{"batch_size": 8, "seq_len": 64})
    assert config.data.shards == 0
    one, _ = _global_batches(config, tok, 1, 3)
    for n in (2, 4, 8):
        many, _ = _global_batches(config, tok, n, 3)
        for a, b in zip(one, many):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    # and the shards hold different documents (not one shard repeated)
    rows = one[0]["input_ids"]
    assert len({r.tobytes() for r in rows}) == 8


@pytest.mark.parametrize("batch_size,processes,want", [
    (8, 1, 8), (8, 2, 8), (8, 8, 8), (128, 4, 8), (4, 1, 4), (4, 2, 4), (6, 1, 2), (6, 3, 3),
    (1, 1, 1), (32, 16, 16)])
def test_default_shard_count(batch_size, processes, want):
    """gcd(batch_size, 8); one per process where that is not a multiple of it."""
    from medjax.data.pipeline import data_shards
    assert data_shards(load_config("pretrain", batch_size=batch_size), processes) == want


def test_a_resumed_run_keeps_its_checkpoints_shard_count(tmp_path):
    """A checkpoint written with 1 shard (the old default on one process) resumes with
    1 shard, not the new default of 8, when data.shards is left at 0."""
    from medjax.training.loop import keep_data_shards
    data = tmp_path / "checkpoints" / "6" / "data"
    data.mkdir(parents=True)
    (data / "shard_0-of-1.json").write_text("{}")
    config = load_config("pretrain", batch_size=8)
    keep_data_shards(config, str(tmp_path))
    assert config.data.shards == 1
    config = load_config("pretrain", **{"batch_size": 8, "data.shards": 2})
    keep_data_shards(config, str(tmp_path))  # set explicitly: kept (restore then says why)
    assert config.data.shards == 2
    config = load_config("pretrain", batch_size=8)
    keep_data_shards(config, str(tmp_path / "fresh"))
    assert config.data.shards == 0


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
    other = pipeline_from_config(load_config("pretrain", **{"batch_size": 4, "seq_len": 64,
                                                            "data.shards": 1}), tok, None)
    with pytest.raises(ValueError, match=r"2 data shards, this run 1.*data.shards=2"):
        DataShardsHandler().restore(d, other)
    json.loads((d / "shard_0-of-2.json").read_text())  # plain JSON a user can inspect


def test_shards_must_divide_batch_and_be_a_multiple_of_processes(tok):
    with pytest.raises(ValueError, match="multiple of the process count 2"):
        pipeline_from_config(load_config("pretrain", **{"data.shards": 3}), tok, None,
                             process_index=0, process_count=2)
    with pytest.raises(ValueError, match="not divisible by data.shards=3"):
        pipeline_from_config(load_config("pretrain", **{"data.shards": 3}), tok, None)
