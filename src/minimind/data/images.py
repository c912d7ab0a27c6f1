"""Images in: a file, bytes or a `data:` URL → RGB pixels of the tower's size, with errors that name the source.

    read_image(source)   → a PIL RGB image (decoded fully here, so a truncated file fails here, not later)
    to_array(image, S)   → uint8 [S, S, 3]: resized (bicubic) to the square the tower reads, as MiniMind-V does
    from_data_url(url)   → bytes of a `data:image/…;base64,…` URL (remote URLs are refused: nothing is fetched)
    record_arrays(r, S)  → the arrays of a vision record's images (data/formats.py "vision")
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from minimind.errors import MiniMindError
from minimind.fileio import decode_base64, read_input

MAX_BYTES = 20 * 2**20             # a larger upload is refused before decoding
MAX_PIXELS = 40_000_000            # width × height; guards against decompression bombs


def read_image(source: str | Path | bytes, where: str = "image"):
    """A path or encoded bytes → PIL RGB image; a MiniMindError "where: problem" for anything unreadable."""
    from PIL import Image

    data = read_input(source, where, "image", MAX_BYTES)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise MiniMindError(f"{where}: the image is {image.width}×{image.height} pixels; the limit is "
                                    f"{MAX_PIXELS:,} pixels")
            image.load()
            return image.convert("RGB")
    except MiniMindError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MiniMindError(f"{where}: not a readable image ({e})") from None


def to_array(image, size: int) -> np.ndarray:
    """PIL image → uint8 [size, size, 3] (bicubic resize when the size differs)."""
    from PIL import Image

    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def load_array(source: str | Path | bytes, size: int, where: str = "image") -> np.ndarray:
    """read_image then to_array."""
    return to_array(read_image(source, where), size)


def record_arrays(record: dict, size: int) -> list[np.ndarray]:
    """A vision record's images (bytes, or paths relative to its file's folder) as uint8 [size, size, 3] arrays; an
    error names the record's "file:line" and the image."""
    return [load_array(ref if isinstance(ref, bytes) else Path(record["base"]) / ref, size,
                       where=f"{record['where']}: image {k}") for k, ref in enumerate(record["images"])]


def from_data_url(url: str, where: str = "image_url") -> bytes:
    """The bytes of a base64 `data:` URL; http(s) and any other scheme are refused (the server fetches nothing)."""
    if not isinstance(url, str) or not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if isinstance(url, str) and ":" in url else "none"
        raise MiniMindError(f"{where}: only data: URLs are accepted (scheme {scheme!r}); this server fetches "
                            "nothing: send the image inline as data:image/png;base64,…")
    return decode_base64(url, where, "image", MAX_BYTES)
