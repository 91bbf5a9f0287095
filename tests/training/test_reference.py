"""References as values; a precomputed table is bound to the data and model that made it."""

import json
import shutil

import numpy as np
import pytest
from conftest import load_config

from medjax.data.samples import path as sample_path
from medjax.training import run


def _write(path, lines):
    path.write_text("".join(lines))


def test_a_stale_precomputed_table_is_recomputed(tmp_path):
    lines = open(sample_path("preference.jsonl")).readlines()
    train, wd = tmp_path / "prefs.jsonl", tmp_path / "wd"
    _write(train, lines[:32])
    c = load_config("dpo", **{"data.sources": str(train), "data.eval_sources": "",
                              "steps": 1, "batch_size": 8, "seq_len": 64, "logging.every": 1,
                              "logging.progress": False, "checkpoint.every": 100})
    run(c, str(wd))
    first = np.load(wd / "reference_logps_train.npz")
    # The run is started again in the same workdir before it had a checkpoint, on other
    # data in the same file: the saved table (same example ids) must not be used.
    shutil.rmtree(wd / "checkpoints")
    _write(train, lines[32:64])
    run(c, str(wd))
    second = np.load(wd / "reference_logps_train.npz")
    assert not np.allclose(first["logps"], second["logps"])
    row = [json.loads(x) for x in open(wd / "metrics.jsonl")][0]
    # policy == reference at step 1 only if the table belongs to this data
    np.testing.assert_allclose(row["loss"], np.log(2), rtol=1e-5)

    # Same data again, another starting model (a different seed): recomputed too.
    shutil.rmtree(wd / "checkpoints")
    with c.unlocked():
        c.seed = 1
    run(c, str(wd))
    third = np.load(wd / "reference_logps_train.npz")
    assert not np.allclose(third["logps"], second["logps"])
    assert str(third["fingerprint"]) != str(second["fingerprint"])


@pytest.mark.slow
def test_precompute_from_another_model_equals_that_model_frozen(tmp_path):
    """objective.reference=precompute:DIR (the online loop's fixed reference) gives the
    step-1 metrics that DIR as a resident frozen reference gives, not the starting
    policy's."""
    lines = open(sample_path("preference.jsonl")).readlines()
    train = tmp_path / "prefs.jsonl"
    _write(train, lines[:16])
    c = load_config("dpo", **{"data.sources": str(train), "data.eval_sources": "",
                              "steps": 1, "batch_size": 8, "seq_len": 64, "logging.every": 1,
                              "logging.progress": False, "checkpoint.every": 100,
                              "eval.at_start": False})
    other = tmp_path / "other"
    run(c, str(other))  # one step from seed 0: another model than seed 1's start
    with c.unlocked():
        c.seed = 1
    rows = {}
    for name, reference in (("table", f"precompute:{other}"), ("frozen", str(other))):
        with c.unlocked():
            c.objective.reference = reference
        run(c, str(tmp_path / name))
        rows[name] = [json.loads(x) for x in open(tmp_path / name / "metrics.jsonl")][0]
    for key in ("loss", "rewards/chosen", "rewards/margins"):
        np.testing.assert_allclose(rows["table"][key], rows["frozen"][key], rtol=1e-4,
                                   atol=1e-6)
    # the starting policy's own table would give log 2 (policy == reference at step 1)
    assert abs(rows["table"]["loss"] - np.log(2)) > 1e-3
