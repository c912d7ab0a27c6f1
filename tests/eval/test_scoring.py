import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minimind.errors import MiniMindError
from minimind.eval.bpb import bits_per_byte, read_documents
from minimind.eval.scoring import Scorer
from minimind.eval.stats import estimate
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

TEXTS = ["To be, or not to be, that is the question.", "成语“一心一意”的意思是专心。", "12 + 30 = 42\n#### 42"]


@pytest.fixture(scope="module")
def scorer():
    return Scorer(make_model("tiny"), load_tokenizer(), window=64)


def reference_logps(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t ≥ 1, from one full forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return F.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_loglikelihood_matches_a_full_forward(scorer):
    tok = scorer.tokenizer
    for context, continuation in [("Question: 2 + 2 =", " 4"), ("Hello", " world, hello"), ("你好", "，世界")]:
        (logp, greedy), = scorer.loglikelihood([(context, continuation)])
        ids = [tok.bos_id, *tok.encode(context + continuation)]
        n = len(ids) - 1 - len(tok.encode(context))
        ref = reference_logps(scorer.model, ids)[-n:]
        assert logp == pytest.approx(ref.sum().item(), abs=1e-4)
        with torch.no_grad():
            argmax = scorer.model(torch.tensor([ids])).logits[0, :-1].argmax(-1)[-n:]
        assert greedy == bool((argmax == torch.tensor(ids[-n:])).all())


def test_trailing_context_space_moves_to_the_continuation(scorer):
    assert scorer.encode_pair("Answer: ", "yes") == scorer.encode_pair("Answer:", " yes")
    assert scorer.loglikelihood([("Answer: ", "yes")]) == scorer.loglikelihood([("Answer:", " yes")])


def test_batching_does_not_change_scores(scorer):
    pairs = [(t[:10], t[10:]) for t in TEXTS]
    one_by_one = [scorer.loglikelihood([p])[0][0] for p in pairs]
    batched = [lp for lp, _ in scorer.loglikelihood(pairs)]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)


def test_windows_score_every_token_once_within_the_window(scorer):
    tokens = list(range(10, 150))
    for stride in (None, 16, 1):
        pairs = scorer.windows(tokens, stride)
        targets = [t for _, cont in pairs for t in cont]
        assert targets == tokens
        assert all(len(c) + len(x) - 1 <= scorer.window for c, x in pairs)
        assert all(c[-1] == (scorer.prefix + tokens)[tokens.index(x[0])] for c, x in pairs)


def test_rolling_equals_the_full_forward_when_the_text_fits(scorer):
    text = TEXTS[0]
    ids = [scorer.tokenizer.bos_id, *scorer.tokenizer.encode(text)]
    assert scorer.rolling(text) == pytest.approx(reference_logps(scorer.model, ids).sum().item(), abs=1e-4)


def test_uniform_model_gives_log2_vocab_bits_per_token():
    model = make_model("tiny")
    with torch.no_grad():
        model.lm_head.weight.zero_()          # every logit 0: p = 1/V for every token
    scorer = Scorer(model, load_tokenizer(), window=16)
    r = bits_per_byte(scorer, TEXTS)
    tokens = sum(len(scorer.tokenizer.encode(t)) for t in TEXTS)
    nbytes = sum(len(t.encode()) for t in TEXTS)
    V = model.config.vocab_size
    assert r["tokens"] == tokens and r["bytes"] == nbytes
    assert r["bpb"]["value"] == pytest.approx(math.log2(V) * tokens / nbytes, rel=1e-5)
    assert r["uniform_bpb"] == pytest.approx(r["bpb"]["value"], rel=1e-5)
    assert r["perplexity"] == pytest.approx(V, rel=1e-4)


def test_bpb_of_a_trained_shape_is_below_uniform_and_reads_files(tmp_path, scorer):
    (tmp_path / "a.jsonl").write_text('{"text": "abc abc"}\n\n{"text": "def"}\n')
    (tmp_path / "b.txt").write_text("plain text file\nwith two lines")
    assert read_documents(tmp_path / "a.jsonl") == ["abc abc", "def"]
    assert read_documents(tmp_path / "b.txt") == ["plain text file\nwith two lines"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(MiniMindError, match=r"bad.jsonl:2: field 'text'"):
        read_documents(tmp_path / "bad.jsonl")
    with pytest.raises(MiniMindError, match="no such file"):
        read_documents(tmp_path / "missing.txt")


def test_bootstrap_interval():
    ones = estimate([1.0] * 50)
    assert (ones.value, ones.low, ones.high) == (1.0, 1.0, 1.0)
    half = estimate([0, 1] * 100)
    assert half.value == 0.5 and 0.4 < half.low < 0.5 < half.high < 0.6
    assert estimate([0, 1] * 100) == half                      # seeded
    ratio = estimate([2.0, 4.0], weights=[1.0, 3.0])
    assert ratio.value == pytest.approx(1.5) and ratio.low >= 4 / 3 - 1e-9 and ratio.high <= 2.0
