"""lm-evaluation-harness model `minimind`: our model directories scored through our own engine.

Importing this module registers the class with lm-eval (0.4.x has no plugin discovery for models, so the
registration happens on import): `minimind lm-eval --model minimind --model_args pretrained=DIR --tasks T`
is lm-eval's own command line with the class registered; from Python, import this module and call
`lm_eval.simple_evaluate(model="minimind", model_args="pretrained=DIR", ...)`.

    loglikelihood          Scorer.loglikelihood: Σ log p(continuation | context), greedy?   (batched by length)
    loglikelihood_rolling  Scorer.rolling: Σ log p of the whole text in disjoint windows
    generate_until         the inference engine, batched; greedy unless do_sample, stopped at `until`
Model arguments: pretrained (a model directory), device, dtype (float32 | bfloat16 | float16), window (tokens per
forward, default 2048), max_gen_toks (default 256).
"""

from __future__ import annotations

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from minimind.eval.scoring import scorer_for
from minimind.infer import SamplingParams, engine_for

GENERATE_BATCH = 32


@register_model("minimind")
class MiniMindLM(LM):
    def __init__(self, pretrained: str, device: str | None = None, dtype: str | None = None, window: int = 2048,
                 max_gen_toks: int = 256, batch_size=None, max_batch_size=None, **_):
        super().__init__()
        from minimind.model import load_model
        from minimind.runtime import resolve_dtype
        from minimind.tokenizer import load_tokenizer, tokenizer_dir

        if device and device.startswith("cuda") and not torch.cuda.is_available():
            device = None                   # lm-eval's default --device is cuda; as its hf model does, fall back
        model = load_model(pretrained, device=device, dtype=resolve_dtype(dtype))
        tokenizer = load_tokenizer(tokenizer_dir(pretrained))
        self.scorer = scorer_for(model, tokenizer, window=int(window))    # a diffusion model: the ELBO's bound
        self.engine = engine_for(model, tokenizer)
        self.max_gen_toks = int(max_gen_toks)
        self.pretrained = str(pretrained)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self.scorer.loglikelihood([tuple(r.args) for r in requests])

    def loglikelihood_rolling(self, requests) -> list[float]:
        return [self.scorer.rolling(r.args[0]) for r in requests]

    def generate_until(self, requests) -> list[str]:
        tokenizer = self.scorer.tokenizer
        prompts, params = [], []
        for r in requests:
            context, kwargs = r.args
            until = kwargs.get("until", [])
            sample = kwargs.get("do_sample", False) and kwargs.get("temperature", 1.0) > 0
            prompts.append(self.scorer.prefix + tokenizer.encode(context))
            params.append(SamplingParams(max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                                         temperature=float(kwargs.get("temperature", 1.0)) if sample else 0.0,
                                         stop=[until] if isinstance(until, str) else list(until), seed=0))
        out = []
        for i in range(0, len(prompts), GENERATE_BATCH):
            out += [c[0].text for c in self.engine.generate(prompts[i:i + GENERATE_BATCH],
                                                             params[i:i + GENERATE_BATCH])]
        return out

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.scorer.tokenizer.chat_text(chat_history, add_generation_prompt=add_generation_prompt)

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained


def main(argv: list[str]) -> None:
    """lm-eval's command line, with `--model minimind` available."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
