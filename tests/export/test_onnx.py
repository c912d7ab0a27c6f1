"""ONNX export: onnxruntime computes our logits for a left-padded prefill and for cached decode steps."""

import numpy as np
import pytest
import torch

from minimind.cli import main
from minimind.errors import MiniMindError
from minimind.export.onnx import OnnxModel, export_onnx
from minimind.infer import Engine, SamplingParams
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    tokenizer = load_tokenizer()
    model = make_model("tiny")
    model.save(tmp / "model", tokenizer=tokenizer)
    assert main(["export", "onnx", "--model", str(tmp / "model"), "--out", str(tmp / "onnx")]) == 0
    return model, tokenizer, OnnxModel(tmp / "onnx", threads=1), tmp


def test_prefill_and_cached_decode_steps_match(exported):
    model, _, onnx, _ = exported
    torch.manual_seed(0)
    ids = torch.randint(0, 6400, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :4] = 0                                                          # row 1 is left-padded
    logits, past = onnx.forward(ids.numpy(), mask.numpy(), onnx.empty_cache(2))
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits.numpy()
    assert np.abs(logits[0] - ours[0]).max() <= 1e-4
    assert np.abs(logits[1, 4:] - ours[1, 4:]).max() <= 1e-4
    assert past[0].shape == (2, model.config.num_key_value_heads, 9, model.config.head_dim)
    for _ in range(4):                                                       # feed the argmax back, one step each
        step = torch.from_numpy(logits[:, -1].argmax(-1))[:, None]
        ids, mask = torch.cat([ids, step], 1), torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        logits, past = onnx.forward(step.numpy(), mask.numpy(), past)
        with torch.no_grad():
            ours = model(ids, attention_mask=mask).logits[:, -1:].numpy()
        assert np.abs(logits - ours).max() <= 1e-4
    assert past[0].shape[2] == 13


def test_greedy_equals_our_engine(exported):
    model, tokenizer, onnx, tmp = exported
    ids = tokenizer.encode("Once upon a time")
    expected = Engine(model, tokenizer).generate([ids], SamplingParams(max_new_tokens=24, temperature=0.0,
                                                                        ignore_eos=True))[0][0].token_ids
    assert onnx.greedy(ids, 24) == expected and len(set(expected)) > 4
    assert {p.name for p in (tmp / "onnx").iterdir()} == {"model.onnx", "config.json", "tokenizer.json",
                                                         "tokenizer_config.json"}


def test_moe_and_missing_files_are_clear_errors(tmp_path):
    make_model("tiny-moe").save(tmp_path / "moe")
    with pytest.raises(MiniMindError, match="MoE"):
        export_onnx(tmp_path / "moe", tmp_path / "out")
    with pytest.raises(MiniMindError, match="model.onnx: file not found"):
        OnnxModel(tmp_path)
