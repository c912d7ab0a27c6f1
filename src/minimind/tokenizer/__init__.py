"""Byte-level BPE tokenizer, the chat template (Jinja and Python renderers) and the output parser."""

from minimind.tokenizer.parse import ParsedOutput, parse_output
from minimind.tokenizer.tokenizer import SPECIAL_TOKENS, Tokenizer, load_tokenizer, tokenizer_dir
from minimind.tokenizer.train import iter_texts, train_tokenizer

__all__ = ["SPECIAL_TOKENS", "ParsedOutput", "Tokenizer", "iter_texts", "load_tokenizer", "parse_output",
           "tokenizer_dir", "train_tokenizer"]
