"""The progress bar: log lines above it (not glued onto it), an ETA from measured step
times."""

import logging
import re

from medjax.training import hooks


def _pieces(text: str) -> list[str]:
    """What a terminal shows line by line: split on newlines and carriage returns, cursor
    movements (another bar open elsewhere) removed."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    return [p for line in text.split("\n") for p in line.split("\r")]


def test_log_lines_are_written_above_the_bar_not_onto_it(capsys):
    bar = hooks.ProgressBar(5, 0, {})
    bar(None)
    logging.getLogger("medjax.training.loop").warning("a log line while training")
    bar(None)
    bar.close()
    err = capsys.readouterr().err
    pieces = _pieces(err)
    logged = [p for p in pieces if "a log line while training" in p]
    assert len(logged) == 1, err
    assert logged[0].startswith("W") and "train:" not in logged[0], err  # absl's format
    assert any(p.startswith("train:") and "2/5" in p for p in pieces), err
    assert logging.getLogger("medjax").propagate  # restored after the bar


def test_eta_comes_from_the_measured_step_time(capsys):
    results = {"loss": 1.5, "tokens_per_second": 100.0, "step_time": 30.0}
    bar = hooks.ProgressBar(10, 0, results)
    bar(None)
    bar(None)
    bar.bar.refresh()
    bar.close()
    last = [p for p in _pieces(capsys.readouterr().err) if p.startswith("train:")][-1]
    assert "eta=04:00" in last, last  # 8 steps left x 30 s
    assert "<" not in last, last  # not tqdm's own remaining-time estimate
