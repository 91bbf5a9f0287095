"""A damaged newest checkpoint never blocks a resume: it is reported in one line naming
the step and file, moved aside, and the run resumes from the previous readable one (or,
with checkpoint.fallback=False, stops with that line)."""

import json
import os
import shutil

import pytest
from conftest import load_config

from medjax.training import run


def _config(steps):
    return load_config("pretrain", **{
        "steps": steps, "batch_size": 8, "seq_len": 64, "checkpoint.every": 2,
        "checkpoint.keep": 3, "checkpoint.async_save": False, "logging.every": 1,
        "logging.progress": False, "eval.every": 0, "eval.at_start": False,
        "mesh.fsdp": 4, "mesh.tensor": 2})


def _losses(workdir):
    return {r["step"]: r["loss"] for r in map(json.loads, open(workdir / "metrics.jsonl"))}


def _biggest_file(root):
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    return max(files, key=os.path.getsize)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(64)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(x ^ 0xFF for x in b))


DAMAGE = {
    "state truncated": lambda c: _truncate(_biggest_file(c / "state")),
    "state bits flipped": lambda c: _flip(_biggest_file(c / "state")),
    "state deleted": lambda c: shutil.rmtree(c / "state"),
    "data shard deleted": lambda c: os.remove(sorted((c / "data").glob("shard_*"))[-1]),
    "data shard truncated": lambda c: _truncate(sorted((c / "data").glob("shard_*"))[0]),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 6-step run's losses, and its workdir as it was after step 4 (the
    checkpoint at 6 removed: a run stopped after its step-4 save)."""
    root = tmp_path_factory.mktemp("damaged")
    run(_config(6), str(root / "full"))
    shutil.copytree(root / "full", root / "at4")
    shutil.rmtree(root / "at4" / "checkpoints" / "6")
    return _losses(root / "full"), root / "at4"


# In `make test` (CI): a damaged state and a missing data shard; the other kinds go through
# the same fallback and run in `make test-all`.
CI_DAMAGE = ("state truncated", "data shard deleted")


@pytest.mark.parametrize("damage", [d if d in CI_DAMAGE else pytest.param(d, marks=pytest.mark.slow)
                                    for d in DAMAGE])
def test_resume_falls_back_to_the_previous_checkpoint(trained, tmp_path, damage, caplog):
    full, at4 = trained
    wd = tmp_path / "wd"
    shutil.copytree(at4, wd)
    DAMAGE[damage](wd / "checkpoints" / "4")
    with caplog.at_level("WARNING"):
        run(_config(6), str(wd))
    warning = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warning) == 1 and "step 4" in warning[0] and str(wd) in warning[0], warning
    assert len(warning[0].splitlines()) == 1
    assert (wd / "checkpoints" / "4.damaged").is_dir()
    got = _losses(wd)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for s in (3, 4, 5, 6):  # recomputed from step 2: the same losses as the unbroken run
        assert abs(got[s] - full[s]) <= 1e-5 * abs(full[s]), (s, got[s], full[s])


def test_without_fallback_a_damaged_checkpoint_is_a_one_line_error(trained, tmp_path):
    _, at4 = trained
    wd = tmp_path / "wd"
    shutil.copytree(at4, wd)
    DAMAGE["data shard truncated"](wd / "checkpoints" / "4")
    c = _config(6)
    c.checkpoint.fallback = False
    with pytest.raises(ValueError, match=r"checkpoint at step 4 is unreadable \(.*shard_0-of"):
        run(c, str(wd))
    assert (wd / "checkpoints" / "4").is_dir()  # left where it was
