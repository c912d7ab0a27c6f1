"""MinHash signatures and an LSH index: which earlier text a new one nearly repeats.

    shingles(t)    the k-character substrings of t, lowercased and with whitespace collapsed; k = 5 for alphabetic
                   text; for text that is mostly CJK, k = 2 (a Chinese character carries about a word's meaning)
                   and no whitespace at all (Chinese does not space its words)
    x(s)           a 64-bit polynomial hash of a shingle's code points, mixed down to 32 bits
    h_i(x)         ((a_i·x + b_i) mod 2^64) >> 32          a_i, b_i random; a 2-independent family (multiply-add-shift)
    signature(t)   [min over shingles s of h_i(x(s))  for i < P]

Two signatures agree at position i with probability J, the Jaccard similarity of the two shingle sets, so the
share of equal positions estimates J. LSH cuts a signature into B bands of R = P/B rows: two texts land in the
same bucket of at least one band with probability 1 − (1 − J^R)^B (P = 128, B = 16: 0.95 at J = 0.8, 0.002 at
J = 0.3), and only those candidates are compared.
"""

from __future__ import annotations

import numpy as np

SHINGLE_BLOCK = 4096        # shingles hashed at a time: bounds the [shingles, P] array to 4 MiB at P = 128


def _mix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (in place): every input bit reaches every output bit."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


class MinHasher:
    """signature(text) → uint32[permutations]; the same seed gives the same signatures in every process."""

    def __init__(self, permutations: int = 128, shingle: int = 5, shingle_cjk: int = 2, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 1 << 63, permutations, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 1 << 63, permutations, dtype=np.uint64)
        self.shingle, self.shingle_cjk = shingle, shingle_cjk
        self.powers = np.array([pow(0x100000001B3, j, 1 << 64) for j in range(max(shingle, shingle_cjk))],
                               dtype=np.uint64)

    def shingle_hashes(self, text: str) -> np.ndarray:
        """uint64 [shingles]: x(s) < 2^32 of every k-character shingle (one shingle for a shorter text)."""
        text = " ".join(text.lower().split())
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        cjk = ((codes >= 0x3400) & (codes <= 0x9FFF)).mean() >= 0.5 if len(codes) else False
        if cjk:
            codes = codes[codes != ord(" ")]
        k = min(self.shingle_cjk if cjk else self.shingle, max(1, len(codes)))
        count = max(1, len(codes) - k + 1)
        x = np.zeros(count, dtype=np.uint64)
        for j in range(k):
            x += codes[j:j + count] * self.powers[j]
        return _mix64(x) >> np.uint64(32)

    def signature(self, text: str) -> np.ndarray:
        x = self.shingle_hashes(text)
        best = np.full(len(self.a), np.iinfo(np.uint64).max, dtype=np.uint64)
        for i in range(0, len(x), SHINGLE_BLOCK):
            values = (x[i:i + SHINGLE_BLOCK, None] * self.a + self.b) >> np.uint64(32)
            np.minimum(best, values.min(axis=0), out=best)
        return best.astype(np.uint32)


class LSHIndex:
    """The kept texts' signatures and B band tables (band key → the first text with it).

    `match(signature)` gives (index, similarity) of the most similar indexed text among those sharing a band with
    it, if that similarity reaches `threshold`; `add(signature)` indexes it and returns its index."""

    def __init__(self, permutations: int = 128, bands: int = 16, threshold: float = 0.8):
        self.bands, self.rows, self.threshold = bands, permutations // bands, threshold
        self.multipliers = _mix64(np.arange(1, self.rows + 1, dtype=np.uint64)) | np.uint64(1)
        self.tables: list[dict[int, int]] = [{} for _ in range(bands)]
        self.signatures = np.empty((1024, permutations), dtype=np.uint32)
        self.size = 0

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """uint64 [N, B]: each band's rows hashed to one key (a collision only adds a candidate to compare)."""
        rows = signatures.reshape(len(signatures), self.bands, self.rows).astype(np.uint64)
        return (rows * self.multipliers).sum(axis=2, dtype=np.uint64)

    def match(self, signature: np.ndarray) -> tuple[int, float] | None:
        keys = self.band_keys(signature[None])[0].tolist()
        candidates = {j for table, key in zip(self.tables, keys, strict=True) if (j := table.get(key)) is not None}
        if not candidates:
            return None
        indices = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        similarity = (self.signatures[indices] == signature).mean(axis=1)
        best = int(similarity.argmax())
        return (int(indices[best]), float(similarity[best])) if similarity[best] >= self.threshold else None

    def add(self, signature: np.ndarray) -> int:
        self.extend(signature[None])
        return self.size - 1

    def extend(self, signatures: np.ndarray) -> None:
        """Index texts in order (a resumed run rebuilds its tables from the saved signatures this way)."""
        needed = self.size + len(signatures)
        if needed > len(self.signatures):
            grown = np.empty((max(needed, 2 * len(self.signatures)), self.signatures.shape[1]), dtype=np.uint32)
            grown[:self.size] = self.signatures[:self.size]
            self.signatures = grown
        self.signatures[self.size:needed] = signatures
        for offset, keys in enumerate(self.band_keys(signatures).tolist()):
            for table, key in zip(self.tables, keys, strict=True):
                table.setdefault(key, self.size + offset)
        self.size = needed
