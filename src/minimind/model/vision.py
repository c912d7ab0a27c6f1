"""The vision tower (a ViT, under transformers' SigLIP / CLIP names) and the projector into the language model.

    pixels [N, 3, S, S] ─ patch_embedding (conv, stride p) ─► [N, P, D]  (P = (S/p)², CLIP: + a class token)
                        + position_embedding
    (CLIP: pre_layrnorm)
    L pre-norm layers:  h += out_proj(attention(layer_norm1(h)));  h += fc2(act(fc1(layer_norm2(h))))
    post_layernorm      (read by the minimind-v projector; Llava reads the layer output before it)

    Projector: f [N, P, D] → linear_2(GELU(linear_1(f))) [N, P, hidden]   (minimind-v: LayerNorm first)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minimind.config import VisionConfig

ACTIVATIONS = {"gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"), "gelu": F.gelu,
               "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x)}


class VisionEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        clip = config.family == "clip"
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size,
                                         stride=config.patch_size, bias=not clip)
        if clip:
            self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.position_embedding = nn.Embedding(config.image_tokens + clip, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, C, S, S] → [N, P (+1), D]."""
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        if hasattr(self, "class_embedding"):
            cls = self.class_embedding.expand(patches.shape[0], 1, -1)
            patches = torch.cat([cls, patches], dim=1)
        return patches + self.position_embedding.weight


class VisionAttention(nn.Module):
    """Multi-head self-attention over all patches (no mask: every patch sees every other)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        D = config.hidden_size
        self.heads = config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        """x [N, P, D] → ([N, P, D], attention weights [N, heads, P, P] when need_weights else None)."""
        N, P, D = x.shape
        shape = (N, P, self.heads, D // self.heads)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        weights = None
        if need_weights:
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            y = weights @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(N, P, D)), weights


class VisionMLP(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = VisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, h, need_weights: bool = False):
        y, weights = self.self_attn(self.layer_norm1(h), need_weights)
        h = h + y
        return h + self.mlp(self.layer_norm2(h)), weights


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(config) for _ in range(config.num_hidden_layers))


class VisionTower(nn.Module):
    """transformers' SiglipVisionModel / CLIPVisionModel (the pooling head left out): pixels → patch features."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = VisionEmbeddings(config)
        if config.family == "clip":
            self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)   # (sic) CLIP's name
        self.encoder = VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """SigLIP's initialisation: position embeddings ~ N(0, 1/D), the patch embedding LeCun-normal, attention
        and MLP matrices Xavier-uniform with zero biases, norms 1 and 0 (PyTorch's defaults would give position
        embeddings of unit size, drowning a small object's patch in the early steps)."""
        D = self.config.hidden_size
        nn.init.normal_(self.embeddings.position_embedding.weight, std=D ** -0.5)
        conv = self.embeddings.patch_embedding
        nn.init.trunc_normal_(conv.weight, std=(conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]) ** -0.5)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        for module in self.encoder.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, pixel_values: torch.Tensor, attention_maps: list | None = None) -> torch.Tensor:
        """pixel_values [N, C, S, S] (normalised) → features [N, image_tokens, D] for the projector: the output of
        layer `feature_layer`, after post_layernorm for the minimind-v projector; CLIP's class token dropped.
        `attention_maps`, when given, receives each layer's attention weights [N, heads, P, P]."""
        h = self.embeddings(pixel_values)
        if hasattr(self, "pre_layrnorm"):
            h = self.pre_layrnorm(h)
        for layer in self.encoder.layers[:self.config.layers_run]:
            h, weights = layer(h, need_weights=attention_maps is not None)
            if attention_maps is not None:
                attention_maps.append(weights)
        if self.config.projector == "minimind-v":
            h = self.post_layernorm(h)
        return h[:, 1:] if self.config.family == "clip" else h


class Projector(nn.Module):
    """transformers' LlavaMultiModalProjector: f [N, P, D] → linear_2(GELU(linear_1(f))) [N, P, hidden]; the
    minimind-v projector normalises f first (`norm`, MiniMind-V's MMVisionProjector)."""

    def __init__(self, config: VisionConfig, text_hidden: int):
        super().__init__()
        if config.projector == "minimind-v":
            self.norm = nn.LayerNorm(config.hidden_size)
        self.linear_1 = nn.Linear(config.hidden_size, text_hidden)
        self.linear_2 = nn.Linear(text_hidden, text_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "norm"):
            features = self.norm(features)
        return self.linear_2(F.gelu(self.linear_1(features)))


def pixel_values(images: torch.Tensor, config: VisionConfig) -> torch.Tensor:
    """uint8 images [N, S, S, C] (as prepared) → normalised floats [N, C, S, S]: (x/255 − mean) / std."""
    mean = torch.tensor(config.image_mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(config.image_std, device=images.device).view(1, -1, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
