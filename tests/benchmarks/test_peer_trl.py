"""benchmarks/peer_trl.py end to end on a 2-layer model: TRL's venv made (or reused), the
same ids in both frameworks, and a table with medjax / TRL ratios. Slow: the venv's pip
install and TRL's start-up take minutes."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_peer_trl_small(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "peer_trl.py"), "--shape=small",
           "--jobs=dpo_frozen,sft", "--steps=1", "--warmup=1", "--seq_len=64",
           "--realistic_seq_len=64", "--length_scale=16", "--records=16", "--dpo_batch=2",
           "--sft_batch=2", f"--workdir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert text.count("same ids in both frameworks") == 2
    for setting in ("equal", "realistic"):
        assert f"### {setting}" in text
    rows = re.findall(r"^\| (dpo_frozen|sft) \| (medjax|trl) \|.*\| ([\d,]+) \|$", text, re.M)
    # equal: DPO and SFT, medjax and TRL; realistic: DPO padded and packed + TRL, SFT x 2
    assert len(rows) == 9
    ratios = [float(x) for x in re.findall(r": ([\d.]+)x$", text, re.M)]
    assert ratios and all(r > 0 for r in ratios)
