"""Visual question answering: exact match of generated answers on held-out questions about images, per question
type, each beside its chance level; and the picture of where an answer looked.

    records   the vision jsonl layout, one question per record: {"conversations": [user, assistant], "image": …,
              "type": "colour"}; the assistant message is the reference answer
    match     the reply's content and the answer, both lower-cased with spaces and final punctuation stripped
    chance    a uniform guess among a type's answers, from the data folder's manifest.json (generated scenes) when
              there is one

The attention picture (`attention_map`): for an answer's first generated token, the decoder's attention to each
image position, averaged over layers and heads, drawn over the image as a heat map.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from minimind.data.formats import read_records
from minimind.data.images import record_arrays
from minimind.errors import MiniMindError
from minimind.eval.stats import estimate
from minimind.infer import Engine, SamplingParams

STRIP = " \t\n.。!！?？"


def read_questions(path: str | Path, image_size: int, limit: int | None = None) -> list[dict]:
    """Records with "question" (the messages before the answer), "answer", "type", "images" (uint8 arrays) and
    "files" (their paths, when they are files)."""
    out = []
    for record in read_records(path, "vision"):
        messages = record["messages"]
        if messages[-1]["role"] != "assistant":
            raise MiniMindError(f"{record['where']}: the last message must be the reference answer")
        images = record_arrays(record, image_size)
        files = [str(Path(record["base"]) / ref) for ref in record["images"] if not isinstance(ref, bytes)]
        out.append({"question": messages[:-1], "answer": messages[-1]["content"], "type": record.get("type") or "all",
                    "images": images, "files": files, "where": record["where"]})
        if limit and len(out) == limit:
            break
    if not out:
        raise MiniMindError(f"{path}: no questions")
    return out


def tower(model):
    """The model's VisionConfig; refused for a text-only model."""
    if getattr(model, "vision", None) is None:
        raise MiniMindError("the vqa task needs a vision-language model (a Llava directory)")
    return model.vision


def normalise(text: str) -> str:
    return " ".join(text.strip(STRIP).lower().split())


def chance_levels(path: str | Path) -> dict[str, float]:
    """Per-type chance from the manifest.json beside the file (empty when there is none)."""
    manifest = Path(path).parent / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("chance", {})
    except (OSError, ValueError, AttributeError):
        return {}


def evaluate_vqa(model, tokenizer, questions: list[dict], chance: dict[str, float] | None = None,
                 batch_size: int = 32, max_new_tokens: int = 16, examples: int = 8) -> dict:
    """Greedy answers → {"accuracy": Estimate, "types": {type: {"accuracy", "chance", "n"}}, "examples"}."""
    tower(model)
    engine = Engine(model.eval(), tokenizer)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    replies = []
    for first in range(0, len(questions), batch_size):
        chunk = questions[first:first + batch_size]
        prompts = [engine.chat_prompt(q["question"]) for q in chunk]
        completions = engine.generate(prompts, params, images=[q["images"] for q in chunk])
        replies += [_content(c[0].text) for c in completions]
    correct = [float(normalise(r) == normalise(q["answer"])) for r, q in zip(replies, questions, strict=True)]
    by_type = defaultdict(list)
    for q, c in zip(questions, correct, strict=True):
        by_type[q["type"]].append(c)
    chance = chance or {}
    types = {kind: {"accuracy": estimate(scores).to_dict(), "chance": chance.get(kind), "n": len(scores)}
             for kind, scores in sorted(by_type.items())}
    shown = [{"question": q["question"][-1]["content"], "answer": q["answer"], "reply": r, "type": q["type"],
              "where": q["where"], "files": q["files"]}
             for q, r in list(zip(questions, replies, strict=True))[:examples]]
    return {"n": len(questions), "accuracy": estimate(correct).to_dict(), "types": types, "examples": shown}


def _content(text: str) -> str:
    from minimind.tokenizer import parse_output

    return parse_output(text).content


@torch.no_grad()
def attention_map(model, tokenizer, question: list[dict], image: np.ndarray) -> np.ndarray:
    """How much the answer's first token attends to each image patch: [grid, grid], summing to 1 (the decoder's
    attention weights, averaged over layers and heads, restricted to the image's positions)."""
    from minimind.model.kernels import kernels_of, use_kernels
    from minimind.model.vision import pixel_values

    vision = model.vision
    engine = Engine(model, tokenizer)
    prompt = torch.tensor([engine.chat_prompt(question)], device=model.lm_head.weight.device)
    pixels = pixel_values(torch.from_numpy(image[None]).to(prompt.device), vision)
    captured = []

    def hook(module, args, output):
        captured.append(args)

    kernels = kernels_of(model)
    use_kernels(model, "reference")
    handles = [layer.self_attn.register_forward_hook(hook) for layer in model.model.layers]
    try:
        embeds = model.embed(prompt, pixels)
        weights = _decoder_attention(model, embeds, captured)
    finally:
        for h in handles:
            h.remove()
        use_kernels(model, kernels)
    where = (prompt[0] == vision.image_token_id).nonzero()[:, 0]
    on_image = weights[where]
    grid = vision.image_size // vision.patch_size
    return (on_image / on_image.sum().clamp(min=1e-12)).reshape(grid, grid).cpu().numpy()


def _decoder_attention(model, embeds: torch.Tensor, captured: list) -> torch.Tensor:
    """The last position's attention over all positions [T], averaged over layers and heads: each layer's q and k
    recomputed (as `Attention.forward` does) from the inputs its attention module received."""
    from minimind.model.rope import apply_rope

    model.model(embeds.new_zeros(embeds.shape[:2], dtype=torch.long), inputs_embeds=embeds)
    total = 0
    for layer, (x, cos, sin, *_rest) in zip(model.model.layers, captured, strict=True):
        attn = layer.self_attn
        B, T, _ = x.shape
        q = apply_rope(attn.q_norm(attn.q_proj(x).view(B, T, attn.n_heads, attn.head_dim)), cos, sin)
        k = apply_rope(attn.k_norm(attn.k_proj(x).view(B, T, attn.n_kv_heads, attn.head_dim)), cos, sin)
        q, k = q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)
        scores = (q[:, :, -1:] @ k.transpose(-1, -2)) / attn.head_dim ** 0.5            # [1, H, 1, T]
        total = total + scores.softmax(-1).mean(dim=1)[0, 0]
    return total / len(captured)


def draw_attention(image: np.ndarray, weights: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The image with the attention heat map over it, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3.3), dpi=100)
    ax.imshow(image)
    size = image.shape[0]
    ax.imshow(weights, cmap="inferno", alpha=0.55, extent=(0, size, size, 0), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
