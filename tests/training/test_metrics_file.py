"""metrics.jsonl on resume: rows past the checkpoint dropped, a torn last line tolerated."""

import json

from medjax.training.metrics import MetricsWriter


def test_a_torn_last_line_does_not_block_the_resume(tmp_path, caplog):
    """A half-written final line (a kill mid-write, a full disk) made every resume fail
    with 'Unterminated string' and no file named."""
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in (10, 20, 30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "lo')
    with caplog.at_level("WARNING"):
        w = MetricsWriter(str(tmp_path), resume_step=20, tensorboard=False)
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:2]
    assert "metrics.jsonl:4: dropped a damaged line" in caplog.text
    w.write(30, {"loss": 0.5})
    assert json.loads(path.read_text().splitlines()[-1]) == {"step": 30, "loss": 0.5}
    w.close()
    MetricsWriter(str(tmp_path), resume_step=0, tensorboard=False).close()  # a fresh start
    assert path.read_text() == ""
