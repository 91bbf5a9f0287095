"""Bad Hugging Face checkpoints give errors that name the file and tensor."""

import json
import os
import shutil
import struct

import numpy as np
import pytest

from medjax.models import CheckpointError, ConfigError, load_hf, save_hf
from medjax.models.safetensors_io import SafetensorsError, SafetensorsFile, write_safetensors


@pytest.fixture
def hf_dir(hf_case, tmp_path):
    src = hf_case("llama_gqa")[0]
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def _rewrite(path, edit):
    """Rewrites a safetensors file through ``edit(dict name -> array) -> dict``."""
    st = SafetensorsFile(path)
    tensors = edit({n: np.array(st.get(n)) for n in st.entries})
    os.unlink(path)
    write_safetensors(path, [(n, a.shape, a.dtype, lambda a=a: a) for n, a in tensors.items()],
                      {"format": "pt"})


def test_missing_directory_and_files(hf_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_hf(tmp_path / "nowhere")
    os.unlink(hf_dir / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf(hf_dir)
    os.unlink(hf_dir / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(hf_dir)


def test_wrong_tensor_shape_names_file_and_tensor(hf_dir):
    name = "model.layers.1.self_attn.k_proj.weight"
    _rewrite(hf_dir / "model.safetensors", lambda t: {**t, name: t[name][:-1]})
    with pytest.raises(CheckpointError) as e:
        load_hf(hf_dir)
    assert "model.safetensors" in str(e.value) and name in str(e.value)
    assert "[31, 64]" in str(e.value) and "[32, 64]" in str(e.value)


def test_missing_and_unexpected_tensors(hf_dir):
    name = "model.layers.2.mlp.up_proj.weight"
    _rewrite(hf_dir / "model.safetensors", lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(CheckpointError, match=f"'{name}' is missing"):
        load_hf(hf_dir)
    _rewrite(hf_dir / "model.safetensors",
             lambda t: {**t, name: np.zeros((96, 64), np.float32),
                        "model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)})
    with pytest.raises(CheckpointError, match="q_proj.bias' is not part of"):
        load_hf(hf_dir)


def test_unsupported_architecture(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg.update(model_type="gemma", architectures=["GemmaForCausalLM"])
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config.json: field 'model_type'.*'gemma'"):
        load_hf(hf_dir)


def test_truncated_file_and_index_pointing_nowhere(hf_dir):
    path = hf_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(SafetensorsError, match="model.safetensors.*truncated"):
        load_hf(hf_dir)
    path.write_bytes(struct.pack("<Q", 10**9) + data[8:100])
    with pytest.raises(SafetensorsError, match="header length"):
        load_hf(hf_dir)
    os.unlink(path)
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001.safetensors"}}
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="model-00001.safetensors.*model.embed_tokens"):
        load_hf(hf_dir)


def test_save_hf_never_overwrites_silently(hf_dir):
    config, params = load_hf(hf_dir)
    before = (hf_dir / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        save_hf(config, params, hf_dir)
    assert (hf_dir / "model.safetensors").read_bytes() == before
    save_hf(config, params, hf_dir, overwrite=True, dtype="bfloat16")
    assert SafetensorsFile(hf_dir / "model.safetensors").entries[
        "model.norm.weight"].dtype.name == "bfloat16"
    assert not [f for f in os.listdir(hf_dir) if ".tmp-" in f]


def _raw_safetensors(path, header: object, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_bad_headers_are_refused_naming_the_file(tmp_path):
    """A header that is a JSON list raised a TypeError; overlapping or negative offsets
    were accepted (the header's own bytes read as weights)."""
    p = tmp_path / "m.safetensors"
    _raw_safetensors(p, [1, 2], b"")
    with pytest.raises(SafetensorsError, match=r"m.safetensors: header is a JSON list"):
        SafetensorsFile(p)
    f32 = {"dtype": "F32", "shape": [2]}
    _raw_safetensors(p, {"a": {**f32, "data_offsets": [0, 8]},
                         "b": {**f32, "data_offsets": [4, 12]}}, bytes(16))
    with pytest.raises(SafetensorsError, match=r"tensors 'a' and 'b' overlap"):
        SafetensorsFile(p)
    _raw_safetensors(p, {"a": {**f32, "data_offsets": [-8, 0]}}, bytes(8))
    with pytest.raises(SafetensorsError, match=r"tensor 'a': data_offsets -8..0"):
        SafetensorsFile(p)
    _raw_safetensors(p, {"a": {**f32, "data_offsets": [0, 8]},
                         "b": {**f32, "data_offsets": [8, 16]}}, bytes(16))
    assert sorted(SafetensorsFile(p).entries) == ["a", "b"]  # adjacent is fine
