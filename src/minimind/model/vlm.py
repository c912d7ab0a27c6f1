"""The vision-language model: the decoder, a vision tower and a projector (transformers' LlavaForConditionalGeneration).

    pixel_values [N, 3, S, S] ─ VisionTower ─► [N, P, D] ─ Projector ─► features [N, P, hidden]
    input_ids [B, T] ─ embed_tokens ─► h [B, T, hidden];  h[input_ids == <|image_pad|>] = features, in reading order
    h ─ the decoder (Transformer) ─► logits

Image k of a batch fills the k-th run of P `<|image_pad|>` tokens, counting row by row (`masked_scatter`, as Llava
does), so several images per row, packed rows and padded batches need nothing else; the KV cache keeps the
spliced positions like any other, so decoding after the prefill never sees an image again.

On disk (`checkpoint_config`, `to_checkpoint`; read back by `minimind.model.io`): Llava's names as transformers
saves them, `language_model.model.*` (our `model.*`), `vision_tower.*`, `multi_modal_projector.*`,
`language_model.lm_head.weight` (left out when tied).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minimind.config import ModelConfig, VisionConfig
from minimind.errors import MiniMindError
from minimind.model.save import to_checkpoint
from minimind.model.transformer import ModelOutput, Transformer
from minimind.model.vision import Projector, VisionTower

# our state-dict prefix → Llava's checkpoint prefix, in the layout transformers writes (4 and 5 alike; 5 also reads
# its in-memory names, READ_PREFIXES)
DISK_PREFIXES = {"model.": "language_model.model.", "lm_head.": "language_model.lm_head.",
                 "vision_tower.": "vision_tower.", "multi_modal_projector.": "multi_modal_projector."}
READ_PREFIXES = {"model.language_model.": "model.", "model.vision_tower.": "vision_tower.",
                 "model.multi_modal_projector.": "multi_modal_projector.", "lm_head.": "lm_head.",
                 **{disk: ours for ours, disk in DISK_PREFIXES.items()}}


class VisionLanguageModel(Transformer):
    """A `Transformer` that also reads images: `forward(input_ids, pixel_values=…)`; without images it is the plain
    language model (decoding, scoring and every text command work unchanged)."""

    def __init__(self, config: ModelConfig, vision: VisionConfig):
        super().__init__(config)
        self.vision = vision
        self.vision_tower = VisionTower(vision)
        self.multi_modal_projector = Projector(vision, config.hidden_size)

    def image_features(self, pixel_values: torch.Tensor, attention_maps: list | None = None) -> torch.Tensor:
        """[N, 3, S, S] → [N, image_tokens, hidden]: what replaces each image's <|image_pad|> embeddings."""
        return self.multi_modal_projector(self.vision_tower(pixel_values, attention_maps))

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, T, hidden] with the image features spliced into the <|image_pad|> positions. The
        count must match (N images × image_tokens pads): `check_image_tokens` says so before a model sees it."""
        h = self.model.embed_tokens(input_ids)
        features = self.image_features(pixel_values).to(h.dtype)
        where = (input_ids == self.vision.image_token_id)[..., None]
        return h.masked_scatter(where, features.reshape(-1, h.shape[-1]))

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None, cache=None,
                logits_to_keep: int | None = None, position_ids: torch.Tensor | None = None,
                reduction: str = "mean") -> ModelOutput:
        """`Transformer.forward` with `pixel_values` [N, 3, S, S] spliced in (None: text only). N = 0 still runs the
        tower (on nothing), so that its parameters get (zero) gradients in every step, as DDP requires."""
        embeds = None if pixel_values is None else self.embed(input_ids, pixel_values)
        return super().forward(input_ids, attention_mask, labels, cache, logits_to_keep, position_ids, reduction,
                               inputs_embeds=embeds)

    def flops_per_token(self, seq_len: int) -> int:
        """The decoder's training FLOPs per token (the tower's, per image, are not counted: MFU is the decoder's):
        `Transformer.flops_per_token` less 6 per matrix entry of the tower and projector (their vectors are left
        out there already, with the norms)."""
        vision = sum(p.numel() for m in (self.vision_tower, self.multi_modal_projector) for p in m.parameters()
                     if p.ndim > 1)
        return super().flops_per_token(seq_len) - 6 * vision

    # ---- the directory -------------------------------------------------------------------------------------

    def checkpoint_config(self, dtype: str) -> dict:
        return self.vision.to_hf_dict(self.config, dtype)

    def processor_files(self) -> dict[str, str]:
        """The files that make `AutoProcessor.from_pretrained(dir)` a LlavaProcessor: a SiglipImageProcessor of the
        tower's square and normalisation, our tokenizer (saved beside them), the chat template (image parts become
        <|image_pad|>, which the processor expands to image_tokens pads)."""
        from minimind.tokenizer.template import JINJA
        from minimind.tokenizer.tokenizer import IMAGE_PAD

        v = self.vision
        image = {"image_processor_type": "SiglipImageProcessor", "do_resize": True, "resample": 3,
                 "size": {"height": v.image_size, "width": v.image_size}, "do_rescale": True,
                 "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(v.image_mean),
                 "image_std": list(v.image_std), "do_convert_rgb": True}
        processor = {"processor_class": "LlavaProcessor", "image_processor": image, "image_token": IMAGE_PAD,
                     "patch_size": v.patch_size, "num_additional_image_tokens": 0,
                     "vision_feature_select_strategy": "full" if v.family == "siglip" else "default"}
        dump = lambda d: json.dumps(d, indent=2) + "\n"  # noqa: E731
        return {"processor_config.json": dump(processor),                                    # transformers 5
                "preprocessor_config.json": dump(image | {"processor_class": "LlavaProcessor"}),   # and 4
                "chat_template.jinja": JINJA}

    def disk_name(self, name: str) -> str:
        return to_disk_name(name)

    def to_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Our state dict → Llava's tensor names (the decoder's own renames first: tied head, experts)."""
        return {to_disk_name(name): t for name, t in to_checkpoint(state, self.config).items()}


def to_disk_name(name: str) -> str:
    for ours, disk in DISK_PREFIXES.items():
        if name.startswith(ours):
            return disk + name[len(ours):]
    raise ValueError(f"no checkpoint name for {name!r}")


def from_disk_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Llava's checkpoint names (either layout) → ours; a name outside the four parts is kept, and refused by the
    loader."""
    out = {}
    for name, t in tensors.items():
        for disk, ours in READ_PREFIXES.items():
            if name.startswith(disk):
                name = ours + name[len(disk):]
                break
        out[name] = t
    return out


def check_image_tokens(input_ids, num_images: int, vision: VisionConfig, where: str = "input") -> None:
    """Refuse token ids (a tensor or a list) whose <|image_pad|> count is not num_images × image_tokens (a splice
    would misplace rows)."""
    found = int((torch.as_tensor(input_ids) == vision.image_token_id).sum())
    if found != num_images * vision.image_tokens:
        raise MiniMindError(f"{where}: {found} <|image_pad|> tokens for {num_images} image(s); expected "
                            f"{num_images} × {vision.image_tokens}")


def is_vision_dir(path: str | Path) -> bool:
    """Whether a model directory's config.json describes a vision-language model."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") in ("llava", "minimind_v")
    except (OSError, ValueError, AttributeError):
        return False
