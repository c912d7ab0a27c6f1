"""Vision stages: next-token cross-entropy on conversations about images (MiniMind-V's pretraining on captions and
its SFT), through the one trainer. The stage adds what images need: the model with a tower (built, loaded or grown
from a text model), prepared images, whole-conversation rows, pixel values beside the tokens, and which parts train.

    vision-pretrain   default train=projector          (MiniMind-V: the projector alone, lr 4e-4)
    vision-sft        default train=projector+layers   (MiniMind-V: projector + LM layers 0 and L-1, lr 5e-6)

Where the model comes from (`model`): a vision preset (fresh weights), a vision directory (continue), or a text
model (a preset or a directory, MiniMind-V's route): then a fresh tower of `vision.preset`'s shape is added, or the
local SigLIP/CLIP directory `vision.tower` is read (the tower learns only with train=all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from minimind.config import VISION_PRESETS, vision_preset
from minimind.data.packing import pack_whole
from minimind.data.prepare import prepare
from minimind.errors import MiniMindError
from minimind.model import load_model
from minimind.model.io import read_tower
from minimind.model.vision import pixel_values
from minimind.model.vlm import VisionLanguageModel, is_vision_dir
from minimind.train.stages import LanguageModelling

TRAINABLE = ("projector", "projector+layers", "all-but-tower", "all")


@dataclass
class VisionTrainConfig:
    train: Literal[("", *TRAINABLE)] = ""   # which parts learn, the rest frozen ("": the stage's default)
    layers: list[int] = field(default_factory=lambda: [0, -1])   # LM layers trained with projector+layers
    preset: str = "mini-v"        # the tower's shape when `model` is a text model (a vision preset's name)
    tower: str = ""               # a local transformers SigLIP / CLIP directory to read the tower from

    def validate(self) -> None:
        if self.train not in ("", *TRAINABLE):
            raise MiniMindError(f"config key 'vision.train' must be one of {', '.join(TRAINABLE)}; got {self.train!r}")
        if self.preset not in VISION_PRESETS:
            raise MiniMindError(f"config key 'vision.preset' must be one of {', '.join(VISION_PRESETS)}")
        if self.tower and not (Path(self.tower) / "config.json").is_file():
            raise MiniMindError(f"config key 'vision.tower': {self.tower} is not a model directory (no config.json)")


class VisionLanguageModelling(LanguageModelling):
    """LanguageModelling whose batches carry images: rows of whole conversations, each image spliced into its
    <|image_pad|> run (`minimind.model.vlm`)."""

    def __init__(self, config, default_train: str):
        super().__init__(pack_whole)
        self.settings, self.default_train = config.vision, default_train
        self.vision = None

    def build_model(self, source: str, device: torch.device) -> VisionLanguageModel:
        settings, continuing = self.settings, is_vision_dir(source)
        if source in VISION_PRESETS:
            model = VisionLanguageModel(*vision_preset(source))
        elif continuing:
            model = load_model(source, device="cpu", dtype=torch.float32, kernels="reference")
        else:                                        # a text model (preset or directory) grows a tower
            text = super().build_model(source, torch.device("cpu"))
            model = VisionLanguageModel(text.config, vision_preset(settings.preset)[1])
            model.load_state_dict(text.state_dict(), strict=False)   # the decoder's tensors; the tower is new
            model.tie_weights()
        if settings.tower and not continuing:
            tower_config, state = read_tower(settings.tower)
            model = grown_with_tower(model, tower_config.replace(projector=model.vision.projector), state,
                                     settings.tower)
        self.vision = model.vision
        freeze(model, settings.train or self.default_train, settings.layers)
        return model.to(device).train()

    def prepare(self, files: list[str], tokenizer_dir: Path, out: Path) -> None:
        prepare(files, "vision", tokenizer_dir, out, progress=False, vision=self.vision)

    def prepared_root(self, config) -> Path:
        """Prepared images depend on the tower's image size: one folder per size and tokens per image."""
        return super().prepared_root(config).with_name(
            f"vision-{self.vision.image_size}px-{self.vision.image_tokens}t")

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict:
        return {"pixel_values": pixel_values(batch["images"], self.vision)}


def grown_with_tower(model: VisionLanguageModel, tower_config, state: dict, source: str) -> VisionLanguageModel:
    """`model` with its tower replaced by the one read from `source` (a new projector when the width changes);
    every tower tensor must be there."""
    grown = VisionLanguageModel(model.config, tower_config)
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith("vision_tower.") and
            (not k.startswith("multi_modal_projector.") or tower_config.hidden_size == model.vision.hidden_size)}
    grown.load_state_dict(keep, strict=False)
    grown.tie_weights()
    missing, unexpected = grown.vision_tower.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("head.")]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise MiniMindError(f"{source}: the tower's tensors do not match its config: {len(missing)} missing, "
                            f"{len(unexpected)} unexpected (first: '{first}')")
    return grown


def freeze(model: VisionLanguageModel, train: str, layers: list[int]) -> None:
    """Make only the chosen parts trainable: projector | projector+layers (the LM layers `layers`, negative
    counting from the end) | all-but-tower | all."""
    model.requires_grad_(train == "all")
    if train == "all":
        return
    model.multi_modal_projector.requires_grad_(True)
    if train == "all-but-tower":
        model.model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    elif train == "projector+layers":
        n = len(model.model.layers)
        for i in layers:
            if not -n <= i < n:
                raise MiniMindError(f"config key 'vision.layers': the model has layers 0–{n - 1}, not {i}")
            model.model.layers[i].requires_grad_(True)
