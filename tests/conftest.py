"""Test set-up: 8 fake CPU devices (for sharding tests) and tiny Hugging Face models.

XLA_FLAGS must be set before JAX initialises its backends, hence at import time
here, before any test module imports jax.
"""

import atexit
import importlib.util
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One persistent compilation cache for the session and the processes its tests start (they
# inherit the environment): many tests compile the same small train steps, and a cached
# program is read instead of compiled again (about a third of the time of the training
# tests). A fresh directory each session, removed at exit; JAX_COMPILATION_CACHE_DIR set by
# the caller is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="medjax-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, initializer_range=0.15)

# name -> (transformers class names, config kwargs, sequence length)
HF_CASES = {
    "llama_gqa": ("Llama", dict(BASE, rope_theta=500000.0), 40),
    "llama_tied": ("Llama", dict(BASE, tie_word_embeddings=True, num_key_value_heads=4), 40),
    # Llama-3.1 rope scaling scaled down: original context 16, sequences of 64.
    "llama31_scaling": ("Llama", dict(BASE, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=16)), 64),
    # Mistral with a sliding window much shorter than the sequence.
    "mistral_window": ("Mistral", dict(BASE, sliding_window=8, rope_theta=10000.0), 40),
}


def build_hf_model(path, family: str, seed: int = 0, **config_kwargs):
    """Creates a random tiny transformers model, saves it to ``path``, returns it (eval)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    cfg = getattr(transformers, f"{family}Config")(**config_kwargs)
    model = getattr(transformers, f"{family}ForCausalLM")(cfg).eval()
    model.save_pretrained(path)
    return model


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


@pytest.fixture(scope="session")
def hf_case(tmp_path_factory):
    """hf_case(name) -> (directory, transformers model, sequence length); built once."""
    cache = {}

    def get(name):
        if name not in cache:
            family, kwargs, length = HF_CASES[name]
            path = tmp_path_factory.mktemp(name)
            cache[name] = (str(path), build_hf_model(path, family, **kwargs), length)
        return cache[name]

    return get


def random_ids(batch, length, vocab, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, (batch, length)).astype(np.int32)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name: str):
    """configs/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"cfg_{name}",
                                                  os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def set_keys(c, **overrides):
    """``c`` with dotted-key overrides (``{"model.lora.rank": 4}``) applied in place."""
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def load_config(name: str = "pretrain", **overrides):
    """A config's default variant with dotted-key overrides."""
    return set_keys(config_module(name).get_config(), **overrides)


def pair_config(name: str, **overrides):
    """The preference-style config (dpo, kto, reward) of the packed-vs-padded tests: 8 rows of
    96 tokens, 2 steps, metrics every step, no evaluation."""
    return load_config(name, **{"batch_size": 8, "seq_len": 96, "steps": 2,
                                "logging.progress": False, "eval.every": 0,
                                "logging.every": 1, **overrides})


def tiny_llama3_dir(path) -> str:
    """An instruct-style HF directory: a random 2-layer Llama with Llama-3's 128,256
    vocabulary, its tokenizer (tiktoken ranks through transformers' converter), a chat
    template and generation_config, as save_pretrained writes them."""
    import torch
    import transformers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from medjax.data.hf_export import LLAMA3_JINJA
    from medjax.data.tokenizer import LLAMA3_PATTERN, _package_file, get_tokenizer

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128256, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=2048,
                                   bos_token_id=128000, eos_token_id=[128001, 128009])
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    ours = get_tokenizer("llama3")
    specials = sorted(ours.special_tokens, key=ours.special_tokens.get)
    backend = TikTokenConverter(vocab_file=_package_file("llama_models", "llama3/tokenizer.model"),
                                pattern=LLAMA3_PATTERN, extra_special_tokens=specials).converted()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend,
                                               bos_token="<|begin_of_text|>",
                                               eos_token="<|eot_id|>")
    tok.chat_template = LLAMA3_JINJA
    tok.save_pretrained(path)
    return str(path)


def readme_block(heading: str) -> str:
    """The first ```bash block of the README section ``## heading``."""
    import re
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def run_readme_block(block: str, work, model: str):
    """Runs a README bash block as written (``MODEL=`` set to ``model``) in ``work``, a
    directory laid out like a fresh clone (configs/, medjax/, .venv/); returns the
    completed process after asserting it succeeded without a traceback."""
    import re
    import subprocess
    import sys
    block = re.sub(r"^MODEL=\S+", f"MODEL={model}", block, count=1, flags=re.M)
    work.mkdir()
    for name in ("configs", "medjax"):
        os.symlink(os.path.join(ROOT, name), work / name)
    venv = os.path.join(ROOT, ".venv")
    if os.path.exists(os.path.join(venv, "bin", "activate")):
        os.symlink(venv, work / ".venv")
    else:  # tests run by another interpreter: "activate" puts that one first
        (work / ".venv" / "bin").mkdir(parents=True)
        (work / ".venv" / "bin" / "activate").write_text(
            f'export PATH="{os.path.dirname(sys.executable)}:$PATH"\n')
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    assert "Traceback" not in r.stderr
    return r
