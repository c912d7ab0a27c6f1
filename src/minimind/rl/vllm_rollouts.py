"""Rollouts on vLLM (`rl.rollout_backend=vllm`), for GPU runs where vLLM is installed; it cannot run on this
project's CPU machines, where the built-in engine (`minimind.infer.Engine`) serves.

`VLLMEngine` offers the slice of the engine's interface that rollouts use — `tokenizer`, `chat_prompt`,
`generate(prompts, params) → [prompt][sample] Completion` — so the rollout code is the same for both. It is
colocated: one `vllm.LLM` in the training process, on the training GPU, started from a directory holding the
starting policy, with `sync(policy)` copying the policy's current weights in (under transformers' tensor names,
which vLLM's Qwen3 loader reads) before every rollout. vLLM's in-process executor is needed for that
(VLLM_ENABLE_V1_MULTIPROCESSING=0, set here before vLLM is imported).
"""

from __future__ import annotations

import os
from pathlib import Path

from minimind.errors import MiniMindError
from minimind.infer.engine import Completion, Engine
from minimind.infer.sampling import SamplingParams
from minimind.model.io import to_checkpoint


class VLLMEngine:
    def __init__(self, model_dir: str | Path, tokenizer, gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            import vllm
        except ImportError:
            raise MiniMindError("rl.rollout_backend=vllm needs vLLM (pip install vllm, on a CUDA machine)") from None
        self.vllm, self.tokenizer = vllm, tokenizer
        self.llm = vllm.LLM(model=str(model_dir), dtype="bfloat16", gpu_memory_utilization=gpu_memory_utilization,
                            enable_prefix_caching=True, max_model_len=max_model_len)

    def sync(self, policy) -> None:
        """Load the policy's current weights into vLLM's copy of the model."""
        state = {name: t.detach() for name, t in policy.state_dict().items()}
        _runner_model(self.llm).load_weights(to_checkpoint(state, policy.config).items())
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()              # cached prefixes were computed with the old weights

    chat_prompt = Engine.chat_prompt                   # the same rendering: it reads only self.tokenizer

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]
                 ) -> list[list[Completion]]:
        """As `Engine.generate`: every completion ends with the end-of-turn token when it stopped on it."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        eos = self.tokenizer.eos_id
        converted = [self.vllm.SamplingParams(
            n=p.n, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or -1, min_p=p.min_p,
            max_tokens=p.max_new_tokens, seed=p.seed, logprobs=0 if p.logprobs is not None else None,
            stop_token_ids=[eos, *p.stop_token_ids], repetition_penalty=p.repetition_penalty,
            presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty) for p in params]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], converted, use_tqdm=False)
        return [[self._completion(o, eos) for o in out.outputs] for out in outputs]

    def _completion(self, output, eos: int) -> Completion:
        ids = list(output.token_ids)
        logprobs = [step[t].logprob for t, step in zip(ids, output.logprobs, strict=True)] if output.logprobs \
            else None
        stopped = output.finish_reason == "stop"
        if stopped and (not ids or ids[-1] != eos):    # stopped on a stop id vLLM left out: train on the stop
            ids.append(eos)
            logprobs = logprobs + [0.0] if logprobs is not None else None
        return Completion(token_ids=ids, text=self.tokenizer.decode([t for t in ids if t != eos]),
                          finish_reason="stop" if stopped else "length", logprobs=logprobs)


def _runner_model(llm):
    """The torch module inside vLLM's in-process worker (its path differs between vLLM versions)."""
    executor = llm.llm_engine.model_executor
    for path in (("driver_worker", "model_runner", "model"), ("driver_worker", "worker", "model_runner", "model")):
        node = executor
        try:
            for name in path:
                node = getattr(node, name)
        except AttributeError:
            continue
        return node
    raise MiniMindError("this vLLM version does not expose its model in-process; rl.rollout_backend=vllm needs "
                        "vLLM's in-process executor (VLLM_ENABLE_V1_MULTIPROCESSING=0)")
