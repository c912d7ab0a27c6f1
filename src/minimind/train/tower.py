"""`minimind vision-tower`: supervised pretraining of the vision tower on labelled images, through the one trainer.

MiniMind-V starts from a pretrained SigLIP tower; none can be downloaded here, and a tower trained only through the
language model's answer tokens learns what is easy to read (colour, place) and not shape (docs/vision.md). So the
tower is pretrained first, as ViTs were on ImageNet: a linear head per label on its mean patch feature,

    loss = Σ_images Σ_labels −log softmax(W_label · mean_p(tower(x)_p) + b_label)[y_label]

summed over the (image, label) pairs a record names (a record may leave a label out). Records are jsonl lines
{"image": path relative to the file, "labels": {"shape": "circle", "count": 3, …}}; each label's classes are the
values seen in training (sorted). The result is a SigLIP vision directory (`SiglipVisionModel`, tensors under
`vision_model.*`) plus the heads (`heads.*`) and `labels.json`; a vision stage reads it with `vision.tower=DIR`
(`model.io.read_tower`), and it learns on or stays frozen there (`vision.train`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from minimind.config import VISION_PRESETS, VisionConfig, vision_preset
from minimind.data.formats import read_records
from minimind.data.images import load_array
from minimind.data.loader import ShuffledBatches
from minimind.errors import MiniMindError
from minimind.fileio import atomic_directory
from minimind.model.io import read_tensors, read_tower
from minimind.model.vision import VisionTower, pixel_values
from minimind.train.stages import Loss, Stage, StageData

LABELS = "labels.json"
WEIGHTS = "model.safetensors"


class TowerClassifier(nn.Module):
    """The tower and one linear head per label: images uint8 [N, S, S, 3] → {label: logits [N, classes]}."""

    def __init__(self, config: VisionConfig, classes: dict[str, list]):
        super().__init__()
        self.config, self.classes = config, classes
        self.vision_model = VisionTower(config)
        self.heads = nn.ModuleDict({name: nn.Linear(config.hidden_size, len(values))
                                    for name, values in classes.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.vision_model(pixel_values(images, self.config)).mean(1)
        return {name: head(features) for name, head in self.heads.items()}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | Path, dtype: torch.dtype | None = None, tokenizer=None) -> Path:
        """A SigLIP vision directory (atomically): config.json, model.safetensors (vision_model.*, heads.*),
        labels.json. The tokenizer is not part of a tower."""
        with atomic_directory(path, marker="config.json") as tmp:
            config = self.config.tower_dict() | {"architectures": ["SiglipVisionModel"]}
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            state = {k: v.detach().to(dtype or v.dtype).contiguous() for k, v in self.state_dict().items()}
            save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
            (tmp / LABELS).write_text(json.dumps(self.classes, ensure_ascii=False, indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> TowerClassifier:
        config, tower = read_tower(path)
        classes_file = Path(path) / LABELS
        if not classes_file.is_file():
            raise MiniMindError(f"{path}: no {LABELS}: not a tower written by `minimind vision-tower`")
        model = cls(config, json.loads(classes_file.read_text(encoding="utf-8")))
        heads = {k.removeprefix("heads."): v for k, v in read_tensors(Path(path)).items() if k.startswith("heads.")}
        model.vision_model.load_state_dict(tower)
        model.heads.load_state_dict(heads)
        return model


def read_labelled(files: list[str], size: int, classes: dict[str, list] | None = None, unseen: bool = False):
    """The records of `files` → (images uint8 [N, size, size, 3], labels int64 [N, heads] with −100 where a record
    gives none, classes). Errors name "file:line". With `classes` given (a continued run), a value outside them is
    refused, or with `unseen` (validation) left out, as a label the record does not give."""
    records = [(Path(r["base"]) / r["image"], r["labels"], r["where"]) for file in files
               for r in read_records(file, "labels")]
    if not records:
        raise MiniMindError(f"{', '.join(files)}: no labelled images")
    if classes is None:
        classes = {}
        for _, labels, _ in records:
            for name, value in labels.items():
                classes.setdefault(name, set()).add(value)
        classes = {name: sorted(values, key=str) for name, values in sorted(classes.items())}
    index = {name: {v: i for i, v in enumerate(values)} for name, values in classes.items()}
    names = list(classes)
    targets = np.full((len(records), len(names)), -100, dtype=np.int64)
    images = np.empty((len(records), size, size, 3), dtype=np.uint8)
    for r, (path, labels, where) in enumerate(records):
        images[r] = load_array(path, size, where=f"{where}: image")
        for name, value in labels.items():
            if name not in index or value not in index[name]:
                if unseen:
                    continue
                raise MiniMindError(f"{where}: label {name}={value!r} was not seen in training")
            targets[r, names.index(name)] = index[name][value]
    return torch.from_numpy(images), torch.from_numpy(targets), classes


class ImageLoader(ShuffledBatches):
    """Seeded shuffled batches of {"images", "labels"}, split across ranks, resumable."""

    def __init__(self, images, labels, batch: int, seed: int, rank: int, world_size: int, device):
        super().__init__(len(images), batch, seed, rank, world_size)
        self.images, self.labels, self.device = images, labels, device

    def collate(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(indices)
        return {"images": self.images[rows].to(self.device), "labels": self.labels[rows].to(self.device)}


class TowerPretraining(Stage):
    """Cross-entropy of each label's head on the tower's mean patch feature (see the module docstring)."""
    generative = False
    language_model = False

    def __init__(self, config):
        self.config = config
        self.images: dict[str, tuple] = {}

    def build_model(self, source: str, device: torch.device) -> TowerClassifier:
        if source in VISION_PRESETS:
            tower = vision_preset(source)[1]
            self.patch = tower.patch_size
            self.images["train"] = read_labelled(self.config.data.train, tower.image_size)
            return TowerClassifier(tower, self.images["train"][2]).to(device)
        if not (Path(source) / LABELS).is_file():
            raise MiniMindError(f"config key 'model': {source!r} is neither a vision preset "
                                f"({', '.join(VISION_PRESETS)}) nor a tower directory of `minimind vision-tower`")
        model = TowerClassifier.load(source)
        self.patch = model.config.patch_size
        self.images["train"] = read_labelled(self.config.data.train, model.config.image_size, model.classes)
        return model.to(device)

    def build(self, config, tokenizer_dir, main, barrier) -> StageData:
        train = self.images["train"]
        val = read_labelled(config.data.val, train[0].shape[1], train[2], unseen=True) if config.data.val else None
        self.images["val"] = val
        return StageData(train=None, rows=list(range(len(train[0]))), val=None,
                         val_rows=list(range(len(val[0]))) if val else [])

    def loader(self, model, tokenizer, data, config, info, device):
        images, labels, _ = self.images["train"]
        return ImageLoader(images, labels, config.batch_size, config.seed, info.rank, info.world_size, device)

    def validation(self, data, config, device) -> list:
        if self.images.get("val") is None:
            return []
        images, labels, _ = self.images["val"]
        return [{"images": images[s:s + config.batch_size].to(device), "labels": labels[s:s + config.batch_size]
                 .to(device)} for s in range(0, len(images), config.batch_size)][:config.eval_batches]

    def count(self, batch):
        return (batch["labels"] != -100).sum()

    def tokens(self, batch) -> int:
        """Image patches, the tower's tokens."""
        return batch["images"].shape[0] * (batch["images"].shape[1] // self.patch) ** 2

    def loss(self, model, batch):
        logits = model(batch["images"])
        total = sum(F.cross_entropy(z.float(), batch["labels"][:, i], ignore_index=-100, reduction="sum")
                    for i, z in enumerate(logits.values()))
        return Loss(total, torch.zeros((), device=total.device))

    @torch.no_grad()
    def evaluate(self, model, batches, token_bytes) -> dict:
        """Accuracy of each label's head on the validation images."""
        right, seen = {}, {}
        for batch in batches:
            for i, (name, z) in enumerate(model(batch["images"]).items()):
                y = batch["labels"][:, i]
                right[name] = right.get(name, 0) + ((z.argmax(-1) == y) & (y != -100)).sum().item()
                seen[name] = seen.get(name, 0) + (y != -100).sum().item()
        return {f"acc_{name}": right[name] / seen[name] for name in right if seen[name]}

    def flops_per_token(self, model, seq_len: int) -> int:
        """Per patch: 6·N for the tower's matmuls, plus its attention over the patches."""
        c = model.config
        P = c.image_tokens
        return 6 * model.num_params() + 12 * c.num_hidden_layers * c.hidden_size * P
