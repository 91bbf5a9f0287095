"""python -m medjax.generate on a model directory with a tokenizer and chat template."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_llama3_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_llama3_dir(tmp_path_factory.mktemp("gen") / "model")


def _gen(*flags):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "medjax.generate", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(env, JAX_PLATFORMS="cpu"))


def test_prompts_file_to_jsonl_with_n_samples(model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is anemia?"}) + "\n" + json.dumps(
        {"messages": [{"role": "user", "content": "Dose?"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    r = _gen(f"--model={model_dir}", f"--prompts={prompts}", "--n=2", "--temperature=1.0",
             "--max_new_tokens=6", f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["prompt"] if isinstance(r["prompt"], str) else "msgs", r["sample"])
            for r in rows] == [("What is anemia?", 0), ("What is anemia?", 1), ("msgs", 0),
                               ("msgs", 1)]
    for row in rows:
        assert 1 <= len(row["ids"]) <= 6 and len(row["logprobs"]) == len(row["ids"])
        assert row["finish_reason"] in ("stop", "length")
        assert all(lp <= 0 for lp in row["logprobs"])
    r = _gen(f"--model={model_dir}", "--prompt=Hello", "--max_new_tokens=4")
    assert r.returncode == 0, r.stderr[-2000:]  # a random model may decode to no text


def test_bad_arguments_are_one_line(model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "where is the prompt"}\n')
    for flags, want in [((f"--prompts={bad}",), "bad.jsonl:2: field 'prompt'"),
                        (("--prompt=a", f"--prompts={bad}"), "give --prompt=TEXT or"),
                        (("--prompt=a", "--top_p=0"), "top_p")]:
        r = _gen(f"--model={model_dir}", *flags)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert lines[-1].startswith("medjax.generate: error: ") and want in lines[-1], lines
    r = _gen(f"--model={tmp_path}/nope", "--prompt=a")
    assert r.returncode != 0 and "no such directory" in r.stderr.strip().splitlines()[-1]


def test_prompts_file_errors_name_line_field_and_type(tmp_path):
    """A prompts file's bad line: one error naming the file, line, field and what it got."""
    from medjax.generate import _read_prompts
    bad = tmp_path / "p.jsonl"
    for line, want in [('{"prompt": 5}', "p.jsonl:2: field 'prompt': expected text or a "
                                         "list of messages, got int"),
                       ('{"messages": {"role": "user"}}', "p.jsonl:2: field 'messages': "
                                                          "expected text or a list of "
                                                          "messages, got dict"),
                       ('["What is anemia?"]', "p.jsonl:2: expected a JSON object"),
                       ('{"question": "x"}', "p.jsonl:2: field 'prompt' (text or messages) "
                                             "or 'messages' is missing or empty"),
                       ('{"prompt": ""}', "is missing or empty")]:
        bad.write_text('{"prompt": "ok"}\n' + line + "\n")
        with pytest.raises(ValueError) as e:
            _read_prompts(str(bad))
        assert want in str(e.value) and "\n" not in str(e.value), str(e.value)
