"""metrics.jsonl on resume (rows past the checkpoint dropped, a torn last line tolerated);
the FLOPs a trained token costs (MFU)."""

import json

import pytest

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


def test_flops_per_token_reward_model_and_lora():
    """Llama-3-8B has 8.03B parameters (published), two 128,256 x 4,096 vocabulary matrices
    among them: an LM trains 6 x 7.5B matmul params a token, a reward model (no LM head)
    6 x 6.98B, and LoRA 4 x the base's + 6 x the adapters' (no base weight gradients)."""
    from medjax import models
    from medjax.models import lora as lora_lib
    from medjax.training.metrics import train_flops_per_token
    c = models.get_preset("llama3_8b")
    attn = 6 * c.num_layers * c.num_heads * c.head_dim * 2048
    vocab = 128256 * 4096
    lm = train_flops_per_token(c, 2048) - attn
    reward = train_flops_per_token(c, 2048, head="scalar") - attn
    assert abs(lm / 6 - (8.03e9 - vocab)) < 0.01e9
    assert abs(reward / 6 - (8.03e9 - 2 * vocab)) < 0.01e9
    with_lora = c.replace(lora=lora_lib.LoraConfig(rank=16))
    adapters = 42_000_000
    got = train_flops_per_token(with_lora, 2048, trainable=adapters) - attn
    assert got == pytest.approx(4 * lm / 6 + 6 * adapters)
