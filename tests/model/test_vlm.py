"""The vision-language model: the splice, the cache, and parity with transformers' Llava both ways."""

import json

import pytest
import torch

from minimind.config import VisionConfig, preset, vision_preset
from minimind.errors import MiniMindError
from minimind.model import KVCache, load_model
from minimind.model.io import read_tower
from minimind.model.kernels import use_kernels
from minimind.model.vlm import VisionLanguageModel, check_image_tokens

transformers = pytest.importorskip("transformers")


def make_vlm(seed=0, kernels="reference", text_preset=None, **vision_changes) -> VisionLanguageModel:
    torch.manual_seed(seed)
    text, vision = vision_preset("tiny-v")
    text = preset(text_preset) if text_preset else text
    model = VisionLanguageModel(text.replace(initializer_range=0.2), vision.replace(**vision_changes))
    with torch.no_grad():                     # wide projector weights so that images change the logits visibly
        for p in model.multi_modal_projector.parameters():
            p.normal_(0, 0.3)
    return use_kernels(model, kernels).eval()


def prompt(model, images: int, text=(5, 6, 7)) -> torch.Tensor:
    pads = [model.vision.image_token_id] * model.vision.image_tokens
    ids = [1]
    for _ in range(images):
        ids += pads + [300]
    return torch.tensor([ids + list(text)])


def pixels(n, seed=1, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_images_change_the_logits_and_land_in_reading_order():
    model = make_vlm()
    ids = prompt(model, 2)
    images = pixels(2)
    a = model(ids, images).logits
    b = model(ids, images.flip(0)).logits
    assert not torch.allclose(a, model(ids).logits, atol=1e-3)
    assert not torch.allclose(a, b, atol=1e-3)                       # image order matters
    features = model.image_features(images)
    embeds = model.embed(ids, images)
    P = model.vision.image_tokens
    assert torch.equal(embeds[0, 1:1 + P], features[0])
    assert torch.equal(embeds[0, 2 + P:2 + 2 * P], features[1])


def test_a_padded_batch_equals_each_row_alone():
    model = make_vlm()
    one, two = prompt(model, 1, text=(5, 6, 7, 8, 9)), prompt(model, 2)
    T = max(one.shape[1], two.shape[1])
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    ids[0, T - one.shape[1]:], mask[0, T - one.shape[1]:] = one[0], 1            # left padding
    ids[1, T - two.shape[1]:], mask[1, T - two.shape[1]:] = two[0], 1
    images = pixels(3)
    batch = model(ids, images, attention_mask=mask).logits
    alone_one = model(one, images[:1]).logits[0]
    alone_two = model(two, images[1:]).logits[0]
    torch.testing.assert_close(batch[0, T - one.shape[1]:], alone_one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch[1, T - two.shape[1]:], alone_two, atol=1e-5, rtol=1e-5)


def test_packed_rows_equal_documents_alone():
    model = make_vlm()
    one, two = prompt(model, 1), prompt(model, 2, text=(9, 10))
    ids = torch.cat([one, two], dim=1)
    positions = torch.cat([torch.arange(one.shape[1]), torch.arange(two.shape[1])])[None]
    images = pixels(3)
    packed = model(ids, images, position_ids=positions).logits[0]
    torch.testing.assert_close(packed[:one.shape[1]], model(one, images[:1]).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[one.shape[1]:], model(two, images[1:]).logits[0], atol=1e-5, rtol=1e-5)


def test_cached_decoding_equals_a_full_forward():
    model = make_vlm()
    ids = prompt(model, 1)
    images = pixels(1)
    full = model(torch.cat([ids, torch.tensor([[11, 12 + 100]])], dim=1), images).logits[0]
    cache = KVCache(model.config, batch_size=1, max_len=64)
    prefill = model(ids, images, cache=cache).logits[0]
    step1 = model(torch.tensor([[11]]), cache=cache).logits[0, -1]
    step2 = model(torch.tensor([[112]]), cache=cache).logits[0, -1]
    torch.testing.assert_close(prefill, full[:ids.shape[1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step1, full[ids.shape[1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step2, full[ids.shape[1] + 1], atol=1e-5, rtol=1e-5)


def test_the_kernels_compute_what_the_reference_computes():
    ids, images = None, pixels(2)
    outs = []
    for kernels in ("reference", "auto"):
        model = make_vlm(kernels=kernels)
        ids = prompt(model, 2)
        labels = ids.clone()
        out = model(ids, images, labels=labels)
        outs.append(out.loss)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


def test_the_image_token_count_is_checked():
    model = make_vlm()
    ids = prompt(model, 2)
    check_image_tokens(ids, 2, model.vision)
    with pytest.raises(MiniMindError, match="32 <|image_pad|> tokens for 1 image"):
        check_image_tokens(ids, 1, model.vision, where="prompt")


@pytest.mark.parametrize("text_preset", ["tiny", "tiny-moe"])
def test_our_directory_is_a_stock_llava_checkpoint(tmp_path, text_preset):
    model = make_vlm(text_preset=text_preset)
    model.save(tmp_path / "vlm")
    config = json.loads((tmp_path / "vlm" / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["vision_config"]["model_type"] == "siglip_vision_model"
    hf = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    assert type(hf).__name__ == "LlavaForConditionalGeneration"
    ids, images = prompt(model, 2), pixels(2)
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=images).logits
        ours = model(ids, images).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    again = load_model(tmp_path / "vlm", kernels="reference")
    with torch.no_grad():
        assert torch.equal(again(ids, images).logits, ours)


def test_a_transformers_llava_loads_in_ours(tmp_path):
    torch.manual_seed(3)
    vc = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=8, vision_use_head=False)
    tc = transformers.Qwen3Config(vocab_size=6400, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                                  rope_theta=1e6, initializer_range=0.2)
    cfg = transformers.LlavaConfig(vision_config=vc, text_config=tc, image_token_index=12, image_seq_length=16,
                                   vision_feature_layer=-1, vision_feature_select_strategy="full",
                                   projector_hidden_act="gelu", tie_word_embeddings=True)
    hf = transformers.LlavaForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf", kernels="reference")
    assert isinstance(ours, VisionLanguageModel) and ours.vision.image_tokens == 16
    ids, images = prompt(ours, 1), pixels(1)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, images).logits, hf(input_ids=ids, pixel_values=images).logits,
                                   atol=1e-4, rtol=1e-4)


def test_the_minimind_v_projector_keeps_its_own_name(tmp_path):
    model = make_vlm(projector="minimind-v")
    model.save(tmp_path / "v")
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    assert config["architectures"] == ["MiniMindVForConditionalGeneration"]
    with pytest.raises(ValueError):                 # transformers refuses it rather than computing something else
        transformers.AutoModelForImageTextToText.from_pretrained(tmp_path / "v")
    again = load_model(tmp_path / "v", kernels="reference")
    ids, images = prompt(model, 1), pixels(1)
    with torch.no_grad():
        assert torch.equal(again(ids, images).logits, model(ids, images).logits)


def test_a_mismatched_checkpoint_is_refused_with_every_key_named(tmp_path):
    from safetensors.torch import load_file, save_file

    make_vlm().save(tmp_path / "vlm")
    file = tmp_path / "vlm" / "model.safetensors"
    tensors = load_file(file)
    del tensors["multi_modal_projector.linear_1.weight"]
    del tensors["multi_modal_projector.linear_2.weight"]
    tensors["vision_tower.head.probe"] = torch.zeros(1)
    save_file(tensors, file)
    with pytest.raises(MiniMindError, match=r"missing tensor .multi_modal_projector.linear_1.weight. and 1 "
                                            r"more \(multi_modal_projector.linear_2.weight\)"):
        load_model(tmp_path / "vlm")


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_a_local_tower_directory_computes_what_transformers_computes(tmp_path, family):
    torch.manual_seed(4)
    if family == "siglip":
        vc = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, image_size=32, patch_size=8)
        tower = transformers.SiglipVisionModel(vc)
    else:
        vc = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
        tower = transformers.CLIPVisionModel(vc)
    tower.eval().save_pretrained(tmp_path / "tower")
    config, state = read_tower(tmp_path / "tower")
    assert config.family == family and config.image_tokens == 16
    model = VisionLanguageModel(vision_preset("tiny-v")[0], config).eval()
    missing, unexpected = model.vision_tower.load_state_dict(state, strict=False)
    assert not missing and all(k.startswith("head.") for k in unexpected)
    images = pixels(2)
    with torch.no_grad():
        hidden = tower(pixel_values=images, output_hidden_states=True).hidden_states[-1]
        ours = model.vision_tower(images)
    expected = hidden[:, 1:] if family == "clip" else hidden
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_vision_config_refuses_bad_fields():
    with pytest.raises(MiniMindError, match="image_size .* multiple of patch_size"):
        VisionConfig(image_size=30, patch_size=8)
    with pytest.raises(MiniMindError, match="projector"):
        VisionConfig(projector="qformer")


def test_autoprocessor_and_the_stock_model_answer_like_our_engine(tmp_path):
    """AutoProcessor (SiglipImageProcessor + our tokenizer + the chat template with image parts) and
    AutoModelForImageTextToText, offline from our directory, give our engine's prompt, pixels and logits."""
    import numpy as np
    from PIL import Image

    from minimind.data.images import to_array
    from minimind.infer import Engine
    from minimind.model.vision import pixel_values
    from minimind.tokenizer import load_tokenizer

    model = make_vlm()
    tokenizer = load_tokenizer()
    model.save(tmp_path / "vlm", tokenizer=tokenizer)
    processor = transformers.AutoProcessor.from_pretrained(tmp_path / "vlm")
    hf = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[picture], text=text, return_tensors="pt")
    ours = Engine(model, tokenizer).chat_prompt([{"role": "user", "content": "<image>\nWhat colour is it?"}])
    assert inputs["input_ids"][0].tolist() == ours
    pixels = pixel_values(torch.from_numpy(to_array(picture, 32)[None]), model.vision)
    torch.testing.assert_close(inputs["pixel_values"], pixels, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(hf(**inputs).logits, model(torch.tensor([ours]), pixels).logits,
                                   atol=1e-4, rtol=1e-4)


def test_int8_weights_keep_a_vision_models_answers_close():
    from minimind.infer.quant import quantize

    model = make_vlm()
    ids, images = prompt(model, 1), pixels(1)
    with torch.no_grad():
        full = model(ids, images).logits
        quantized = quantize(make_vlm(), "int8")(ids, images).logits
    assert (quantized - full).abs().max() < 0.05 * full.abs().max()      # the decoder's Linears are int8
    assert torch.equal(quantized.argmax(-1), full.argmax(-1))
