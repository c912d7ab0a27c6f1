"""Bits per byte and perplexity of a model on text files.

    bpb = Σ_docs Σ_tokens −log₂ p(token | prefix) / Σ_docs UTF-8 bytes of the document
    perplexity = exp(Σ −ln p / number of tokens)

Every token of every document is scored (the first given BOS), so the numerator is the model's code length for
the text and the denominator does not depend on the tokenizer: bpb compares models with different tokenizers,
perplexity only models that share one.

A diffusion model's log-likelihood has no closed form: its figure is the ELBO's **upper bound** on bpb (each
window's Monte-Carlo estimate from `scoring.DiffusionScorer`), labelled `"bound": true`, with the standard error of
the Monte-Carlo mean over the draws (each draw a whole-corpus estimate) and its ±1.96·SE interval.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from minimind.errors import MiniMindError
from minimind.eval.scoring import DiffusionScorer, Scorer
from minimind.eval.stats import estimate


def read_documents(path: str | Path) -> list[str]:
    """A .jsonl file: the "text" field of each line (pretraining layout); any other file: its whole text as
    one document."""
    path = Path(path)
    if not path.is_file():
        raise MiniMindError(f"{path}: no such file")
    if path.suffix != ".jsonl":
        return [path.read_text(encoding="utf-8")]
    docs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError) as e:
                raise MiniMindError(f"{path}:{number}: not a JSON object ({e})") from None
            if not isinstance(text, str):
                raise MiniMindError(f"{path}:{number}: field 'text' must be a string")
            docs.append(text)
    return docs


def bits_per_byte(scorer: Scorer, documents: list[str], stride: int | None = None) -> dict:
    """bpb with a bootstrap interval over documents, perplexity, and beside them the uniform model's bpb
    (log₂ V bits per token: the chance level)."""
    if isinstance(scorer, DiffusionScorer):
        return _bound_bits_per_byte(scorer, documents, stride)
    bits, nbytes, tokens = [], [], 0
    for doc in filter(None, documents):
        ids = scorer.tokenizer.encode(doc)
        bits.append(-sum(logp for logp, _ in scorer.score(scorer.windows(ids, stride))) / math.log(2))
        nbytes.append(len(doc.encode("utf-8")))
        tokens += len(ids)
    if not nbytes:
        raise MiniMindError("bits per byte: the documents hold no text")
    vocab = scorer.model.config.vocab_size
    return {"bpb": estimate(bits, nbytes).to_dict(), "perplexity": math.exp(sum(bits) * math.log(2) / tokens),
            "uniform_bpb": math.log2(vocab) * tokens / sum(nbytes), "tokens": tokens, "bytes": sum(nbytes),
            "documents": len(nbytes), "window": scorer.window,
            "stride": min(stride or scorer.window, scorer.window)}


def _bound_bits_per_byte(scorer: DiffusionScorer, documents: list[str], stride: int | None) -> dict:
    """The diffusion model's bound: Σ_draws of −Σ log p estimates per byte, its mean over draws and standard error."""
    nats = torch.zeros(scorer.samples, dtype=torch.float64)       # each draw's estimate of the corpus's code length
    nbytes = tokens = docs = 0
    for doc in filter(None, documents):
        ids = scorer.tokenizer.encode(doc)
        values, _ = scorer.score_samples(scorer.windows(ids, stride))
        nats -= values.sum(0)
        nbytes += len(doc.encode("utf-8"))
        tokens += len(ids)
        docs += 1
    if not nbytes:
        raise MiniMindError("bits per byte: the documents hold no text")
    bits = nats / (math.log(2) * nbytes)
    value, error = bits.mean().item(), (bits.std() / math.sqrt(scorer.samples)).item()
    vocab = scorer.model.config.vocab_size
    return {"bpb": {"value": value, "low": value - 1.96 * error, "high": value + 1.96 * error, "n": docs},
            "bound": True, "stderr": error, "samples": scorer.samples, "seed": scorer.seed,
            "perplexity": math.exp(value * math.log(2) * nbytes / tokens),
            "uniform_bpb": math.log2(vocab) * tokens / nbytes, "tokens": tokens, "bytes": nbytes, "documents": docs,
            "window": scorer.window, "stride": min(stride or scorer.window, scorer.window)}
