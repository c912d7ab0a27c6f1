"""The omni model (MiniMind-O): a Thinker that hears, and a Talker that speaks.

    audio ─ log_mel ─ AudioEncoder ─ AudioProjector ─► features [N tokens, hidden]
    input_ids [B, T] ─ embed_tokens ─► h;  h[input_ids == <|audio_pad|>] = features, clip by clip in reading order
    h ─ the Thinker (the decoder, `Transformer`) ─► text logits
          └─ its hidden state after the bridge layer ─ Talker ─► unit logits [B, codebooks, T, units]
    units ─ MelCodec.vocode ─► audio

Clip k of a batch fills the k-th run of `<|audio_pad|>` tokens (⌈frames / 8⌉ of them), as images fill their
`<|image_pad|>` runs in `minimind.model.vlm`. Without audio and units it is the plain language model: every text
command (chat, serve, eval) runs on it unchanged.

On disk: config.json with `architectures: [MiniMindOForConditionalGeneration]` (no stock class computes a Talker),
the Thinker's Qwen3 config as `text_config`, `audio_config`; model.safetensors with the Thinker under Qwen3's names
(`model.*`, `lm_head.weight`) and `audio_encoder.*`, `audio_projector.*`, `talker.*`, `codec.codebooks`,
`ctc_head.*`; a
`preprocessor_config.json` describing the features as transformers' WhisperFeatureExtractor computes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minimind.config import MINIMIND_O, AudioConfig, ModelConfig
from minimind.errors import MiniMindError
from minimind.model.audio import AudioEncoder, AudioProjector, audio_tokens_tensor
from minimind.model.codec import MelCodec
from minimind.model.save import to_checkpoint
from minimind.model.talker import Talker
from minimind.model.transformer import ModelOutput, Transformer


class OmniModel(Transformer):
    """A `Transformer` that also hears (`forward(…, mels=, frames=)`) and speaks (`think_and_talk`)."""

    def __init__(self, config: ModelConfig, audio: AudioConfig):
        super().__init__(config)
        self.audio = audio
        self.bridge_layer = audio.bridge(config)
        self.audio_encoder = AudioEncoder(audio)
        self.audio_projector = AudioProjector(audio, config.hidden_size)
        self.talker = Talker(config, audio) if audio.talker_layers else None
        self.codec = MelCodec(audio)
        self.ctc_head = torch.nn.Linear(audio.encoder_size, config.vocab_size) if audio.ctc_head else None
        if self.talker is not None:
            self._init_talker()

    @torch.no_grad()
    def _init_talker(self) -> None:
        """The Talker's matrices ~ N(0, initializer_range), like the Thinker's (`Transformer.init_weights`)."""
        for name, p in self.talker.named_parameters():
            if p.ndim > 1:
                torch.nn.init.normal_(p, 0.0, self.config.initializer_range)
            elif name.endswith("norm.weight"):
                torch.nn.init.ones_(p)

    def audio_features(self, mels: torch.Tensor, frames: torch.Tensor,
                       encoded: torch.Tensor | None = None) -> torch.Tensor:
        """log-mels [N, n_mels, F] with their frames [N] → the clips' tokens, concatenated: [Σ ⌈frames/8⌉, hidden].
        `encoded`: the encoder's output for these clips when the caller has it already (the omni stage computes it
        once for this and the CTC loss)."""
        x = self.audio_projector(self.audio_encoder(mels, frames) if encoded is None else encoded)
        keep = torch.arange(x.shape[1], device=x.device)[None] < audio_tokens_tensor(frames.to(x.device))[:, None]
        return x[keep]

    def ctc_loss(self, mels: torch.Tensor, frames: torch.Tensor, targets: torch.Tensor,
                 target_lengths: torch.Tensor, encoded: torch.Tensor | None = None) -> torch.Tensor:
        """Σ over clips of CTC's −log p(transcript | clip) from the encoder's tokens [N, T, encoder_size] through
        `ctc_head` (blank = id 0, which no transcript holds): targets [Σ lengths] concatenated, target_lengths [N]
        (0 = no transcript: left out)."""
        keep = target_lengths > 0
        encoded = self.audio_encoder(mels, frames) if encoded is None else encoded
        log_probs = self.ctc_head(encoded).float().log_softmax(-1)
        return torch.nn.functional.ctc_loss(log_probs[keep].transpose(0, 1), targets,
                                            audio_tokens_tensor(frames)[keep], target_lengths[keep], blank=0,
                                            reduction="sum", zero_infinity=True)

    def embed(self, input_ids: torch.Tensor, mels: torch.Tensor, frames: torch.Tensor,
              encoded: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings [B, T, hidden] with the clips' features in the <|audio_pad|> positions (the count must
        match: `check_audio_tokens`)."""
        h = self.model.embed_tokens(input_ids)
        features = self.audio_features(mels, frames, encoded).to(h.dtype)
        return h.masked_scatter((input_ids == self.audio.audio_token_id)[..., None], features)

    def forward(self, input_ids: torch.Tensor, mels: torch.Tensor | None = None, frames: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None, cache=None,
                logits_to_keep: int | None = None, position_ids: torch.Tensor | None = None,
                reduction: str = "mean", encoded: torch.Tensor | None = None) -> ModelOutput:
        """`Transformer.forward` with the clips `mels` [N, n_mels, F] (`minimind.model.audio.batch_mels`) spliced in."""
        embeds = None if mels is None else self.embed(input_ids, mels, frames, encoded)
        return super().forward(input_ids, attention_mask, labels, cache, logits_to_keep, position_ids, reduction,
                               inputs_embeds=embeds)

    def think_and_talk(self, input_ids: torch.Tensor, units: torch.Tensor, mels: torch.Tensor | None = None,
                       frames: torch.Tensor | None = None, cache=None, talker_cache=None,
                       encoded: torch.Tensor | None = None):
        """The Thinker over input_ids [B, T] (clips spliced in) and the Talker over its bridge and the units placed
        at each step [B, codebooks, T] → (Thinker hidden [B, T, hidden] after the final norm, MoE aux or None,
        unit logits [B, codebooks, T, units])."""
        if self.talker is None:
            raise MiniMindError("this omni model has no Talker (talker_layers 0): it hears but does not speak")
        embeds = None if mels is None else self.embed(input_ids, mels, frames, encoded)
        taken = {}
        hook = self.model.layers[self.bridge_layer].register_forward_hook(
            lambda module, args, out: taken.__setitem__("bridge", out[0]))
        try:
            h, aux = self.model(input_ids, cache=cache, inputs_embeds=embeds)
        finally:
            hook.remove()
        return h, aux, self.talker(taken["bridge"], units, talker_cache)

    def flops_per_token(self, seq_len: int) -> int:
        """The Thinker's and the Talker's training FLOPs per text position (the encoder's, per clip, are left out,
        as the vision tower's are)."""
        parts = [self.audio_encoder, self.audio_projector, *([self.ctc_head] if self.ctc_head is not None else [])]
        audio = sum(p.numel() for m in parts for p in m.parameters() if p.ndim > 1)
        return super().flops_per_token(seq_len) - 6 * audio

    # ---- the directory -------------------------------------------------------------------------------------

    def checkpoint_config(self, dtype: str) -> dict:
        return self.audio.to_hf_dict(self.config, dtype)

    def to_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return to_checkpoint(state, self.config)

    def processor_files(self) -> dict[str, str]:
        """preprocessor_config.json: transformers' WhisperFeatureExtractor with these settings computes the
        encoder's input features (tested equal; pad with padding="longest", not to 30 s)."""
        features = {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": self.audio.n_mels,
                    "sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "chunk_length": 30,
                    "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
                    "return_attention_mask": False}
        return {"preprocessor_config.json": json.dumps(features, indent=2) + "\n"}


def check_audio_tokens(input_ids, frames: list[int], audio: AudioConfig, where: str = "input") -> None:
    """Refuse token ids whose <|audio_pad|> count is not the clips' tokens (Σ ⌈frames/8⌉): a splice would misplace
    them."""
    expected = int(audio_tokens_tensor(torch.as_tensor(frames, dtype=torch.long)).sum()) if len(frames) else 0
    found = int((torch.as_tensor(input_ids) == audio.audio_token_id).sum())
    if found != expected:
        raise MiniMindError(f"{where}: {found} <|audio_pad|> tokens for {len(frames)} clip(s); expected {expected}")


def is_omni_dir(path: str | Path) -> bool:
    """Whether a model directory's config.json describes an omni model."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == MINIMIND_O[0]
    except (OSError, ValueError, AttributeError):
        return False
