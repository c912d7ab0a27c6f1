"""Log-likelihood of text under a model: the one primitive behind bits per byte, multiple choice and the
lm-eval adapter.

A request is a (context, continuation) pair. Following lm-evaluation-harness, whitespace at the end of the
context moves to the start of the continuation, the whole string is encoded once and the continuation's
tokens are those past the context's own encoding (so BPE merges across the boundary are the ones the model
saw in training), and the context starts with BOS. The answer is Σ log p(continuation token | prefix) in fp32
and whether every continuation token is the argmax (greedy).
"""

from __future__ import annotations

import torch

from minimind.model.loss import token_logprobs
from minimind.tokenizer import Tokenizer


class Scorer:
    def __init__(self, model, tokenizer: Tokenizer, window: int = 2048, batch_tokens: int = 16384):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.window = min(window, model.config.max_position_embeddings)   # longest input of one forward
        self.batch_tokens = batch_tokens
        self.device = next(model.parameters()).device
        self.prefix = [tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        n = len(self.tokenizer.encode(context)) if context else 0
        return self.prefix + whole[:n], whole[n:]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.score([self.encode_pair(c, x) for c, x in requests])

    def rolling(self, text: str, stride: int | None = None) -> float:
        """Σ log p over every token of `text` (the first one given BOS), in windows of at most `window`
        inputs that each score the next `stride` tokens (default: the window, as lm-eval's rolling
        log-likelihood); a smaller stride gives each scored token more context."""
        return sum(lp for lp, _ in self.score(self.windows(self.tokenizer.encode(text), stride)))

    def windows(self, tokens: list[int], stride: int | None = None) -> list[tuple[list[int], list[int]]]:
        """(context, continuation) token pairs covering every token once: targets [s, e] of seq = prefix +
        tokens are scored from the input seq[max(0, e - window) : e]."""
        stride = min(stride or self.window, self.window)
        seq, pairs = self.prefix + list(tokens), []
        for s in range(1, len(seq), stride):
            e = min(len(seq) - 1, s + stride - 1)
            a = max(0, e - self.window)
            pairs.append((seq[a:s], seq[s:e + 1]))
        return pairs

    @torch.no_grad()
    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(Σ log p(continuation | context), greedy?) per (context, continuation) of token ids, batched by
        length (longest first, at most batch_tokens per forward); a context longer than the window loses
        its oldest tokens."""
        out: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        rows = []
        for i, (context, continuation) in enumerate(pairs):
            if not continuation:
                continue
            seq = (list(context) + list(continuation))[-(self.window + 1):]
            rows.append((i, seq, len(continuation)))
        rows.sort(key=lambda r: -len(r[1]))
        start = 0
        while start < len(rows):
            width = len(rows[start][1]) - 1
            size = max(1, min(len(rows) - start, self.batch_tokens // max(width, 1)))
            batch = rows[start:start + size]
            start += size
            ids = torch.zeros(len(batch), width + 1, dtype=torch.long)
            for j, (_, seq, _) in enumerate(batch):
                ids[j, :len(seq)] = torch.tensor(seq)
            ids = ids.to(self.device)
            logits = self.model(ids).logits
            logps = token_logprobs(logits, ids)                  # [rows, width + 1]; right padding is never seen
            for j, (i, seq, n) in enumerate(batch):
                end = len(seq)
                greedy = logits[j, end - 1 - n:end - 1].argmax(-1) == ids[j, end - n:end]
                out[i] = (logps[j, end - n:end].sum().item(), bool(greedy.all().item()))
        return out
