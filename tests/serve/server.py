"""A live server on 127.0.0.1 (uvicorn in a thread) and a scripted model that says what a test needs."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import torch
import uvicorn

try:
    import httpx
except ImportError:                 # newer `openai` releases depend on httpx2, the same API
    import httpx2 as httpx  # noqa: F401

from minimind.infer import Engine
from minimind.model.transformer import ModelOutput, Transformer
from minimind.serve import create_app


@contextlib.contextmanager
def live_server(engine: Engine, name: str = "tiny", **options):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(engine, name, **options), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class ScriptedModel(Transformer):
    """A real tiny model whose logits are overridden to spell a script: script(prompt ids) → reply text.
    One request at a time (the script follows the last prefilled prompt)."""

    def __init__(self, model: Transformer, tokenizer, script):
        super().__init__(model.config)
        self.load_state_dict(model.state_dict())
        self.tokenizer, self.script = tokenizer, script
        self.prompt_len, self.reply = 0, []

    def _force(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ids = [self.reply[min(int(i), len(self.reply) - 1)] for i in index.flatten()]
        forced = torch.full_like(logits, -30.0)
        forced[torch.arange(len(ids)), ..., ids] = 30.0
        return forced

    def forward(self, input_ids, attention_mask=None, labels=None, cache=None, logits_to_keep=None,
                position_ids=None):
        out = super().forward(input_ids, attention_mask, labels, cache, logits_to_keep, position_ids)
        self.prompt_len = input_ids.shape[1]
        self.reply = self.tokenizer.encode(self.script(input_ids[0].tolist())) + [self.tokenizer.eos_id]
        return ModelOutput(self._force(out.logits, torch.zeros(input_ids.shape[0])), out.loss, out.aux_loss)

    def decode_step(self, input_ids, positions, key_mask, cache):
        logits = super().decode_step(input_ids, positions, key_mask, cache)
        return self._force(logits, positions[:, 0] - self.prompt_len + 1)
