"""The tokenizer: a byte-level BPE (HF `tokenizers`) plus the chat template, saved as tokenizer.json +
tokenizer_config.json, which transformers' AutoTokenizer, vLLM and llama.cpp's converter read."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import tokenizers

from minimind.errors import MiniMindError
from minimind.tokenizer.template import IMAGE_PAD, JINJA, render  # noqa: F401 (IMAGE_PAD: exported)

# Fixed ids, as in the reference. Ids 0-20 are special (dropped by skip_special_tokens); the tool, think and
# buffer tokens are not, so the output parser still sees them after such decoding.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>",
    "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
    *(f"<|buffer{i}|>" for i in range(1, 10)),
]
NUM_SPECIAL = 21
PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
FILES = ("tokenizer.json", "tokenizer_config.json")
DEFAULT_DIR = resources.files("minimind.tokenizer").joinpath("default")


def _byte_of_char() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_OF_CHAR = _byte_of_char()


class Tokenizer:
    """Encode/decode text and render conversations to token ids with their loss mask."""

    def __init__(self, backend: tokenizers.Tokenizer, chat_template: str = JINJA):
        self.backend = backend
        self.chat_template = chat_template
        self.pad_id, self.bos_id, self.eos_id = (backend.token_to_id(t) for t in (PAD, BOS, EOS))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Text → ids; special tokens written in the text (e.g. "<|im_end|>") become their ids."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for: byte-level BPE spells each byte as one printable character (GPT-2's
        table); an added token (e.g. "<think>") is its own UTF-8 text."""
        token = self.backend.id_to_token(token_id)
        if token is None:
            return b""
        if token_id in self.backend.get_added_tokens_decoder():
            return token.encode()
        return bytes(_BYTE_OF_CHAR[c] for c in token)

    def chat_text(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False,
                  enable_thinking: bool = False) -> str:
        return render(messages, tools, add_generation_prompt, enable_thinking)[0]

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False,
                    enable_thinking: bool = False) -> tuple[list[int], list[int]]:
        """Conversation → (ids, loss mask): mask 1 on every assistant token from after
        "<|im_start|>assistant\\n" through its "<|im_end|>" (and on a token that straddles into that span),
        0 elsewhere."""
        return self.render_chat_batch([(messages, tools)], add_generation_prompt, enable_thinking)[0]

    def render_chat_batch(self, conversations: list[tuple[list[dict], list[dict] | None]],
                          add_generation_prompt: bool = False, enable_thinking: bool = False,
                          ) -> list[tuple[list[int], list[int]]]:
        """render_chat for many (messages, tools) pairs; the encoding runs in the Rust thread pool."""
        rendered = [render(messages, tools, add_generation_prompt, enable_thinking)
                    for messages, tools in conversations]
        encodings = self.backend.encode_batch([text for text, _ in rendered], add_special_tokens=False)
        out = []
        for (_, spans), encoding in zip(rendered, encodings, strict=True):
            offsets = np.array(encoding.offsets, dtype=np.int64).reshape(-1, 2)
            mask = np.zeros(len(offsets), dtype=bool)
            # A token is trained when any of its characters is: BPE may merge the "\n" that ends
            # "<|im_start|>assistant\n" with leading spaces of the content into one token.
            for lo, hi in spans:
                mask |= (offsets[:, 0] < hi) & (offsets[:, 1] > lo)
            out.append((encoding.ids, mask.astype(np.int64).tolist()))
        return out

    # ---- files ----------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        (directory / "tokenizer_config.json").write_text(json.dumps(self.config(), indent=2, ensure_ascii=False)
                                                         + "\n")

    def config(self) -> dict:
        """tokenizer_config.json as transformers expects it (PreTrainedTokenizerFast + the chat template)."""
        added = {str(self.backend.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                                    "rstrip": False, "single_word": False,
                                                    "special": i < NUM_SPECIAL}
                 for i, t in enumerate(SPECIAL_TOKENS)}
        return {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
                "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": BOS, "eos_token": EOS,
                "pad_token": PAD, "unk_token": PAD, "clean_up_tokenization_spaces": False,
                "model_max_length": 32768, "split_special_tokens": False, "chat_template": self.chat_template}

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise MiniMindError(f"{path}: file not found")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:          # the Rust library raises plain Exceptions
            raise MiniMindError(f"{path}: not a readable tokenizer ({e})") from None
        for i, token in enumerate(SPECIAL_TOKENS[:3]):
            if backend.token_to_id(token) != i:
                raise MiniMindError(f"{path}: special token {token!r} must have id {i}")
        template = JINJA
        config_path = directory / "tokenizer_config.json"
        if config_path.is_file():
            try:
                template = json.loads(config_path.read_text()).get("chat_template", JINJA)
            except json.JSONDecodeError as e:
                raise MiniMindError(f"{config_path}: not valid JSON ({e})") from None
        return cls(backend, template)


def tokenizer_dir(model_dir: str | Path) -> Path:
    """Where a model's tokenizer lives: the model directory when it holds tokenizer.json, else the default
    tokenizer's directory (a model made from a preset, or a checkpoint saved without one)."""
    return Path(model_dir) if (Path(model_dir) / "tokenizer.json").is_file() else DEFAULT_DIR


def load_tokenizer(directory: str | Path | None = None) -> Tokenizer:
    """The tokenizer of a model directory; None → the default tokenizer shipped with the package."""
    return Tokenizer.load(DEFAULT_DIR if directory is None else directory)
