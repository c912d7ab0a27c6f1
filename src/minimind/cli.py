"""`minimind <command>`: the one command-line entry point. Each command parses its flags and calls one function."""

from __future__ import annotations

import argparse
import sys
import time

from minimind.errors import MiniMindError


def cmd_presets(args) -> None:
    import torch

    from minimind.config import PRESETS
    from minimind.model import Transformer

    print(f"{'preset':<16} {'params':>10} {'active':>10}  shape")
    for name, config in PRESETS.items():
        with torch.device("meta"):
            model = Transformer(config)
        shape = (f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
                 f"{config.num_attention_heads}/{config.num_key_value_heads} heads")
        if config.is_moe:
            shape += f", {config.num_experts} experts top-{config.num_experts_per_tok}"
        print(f"{name:<16} {_millions(model.num_params()):>10} {_millions(model.num_params(True)):>10}  {shape}")


def cmd_init(args) -> None:
    import torch

    from minimind.config import preset
    from minimind.model import Transformer
    from minimind.overrides import apply_overrides
    from minimind.runtime import resolve_dtype

    config = apply_overrides(preset(args.preset), args.overrides)
    torch.manual_seed(args.seed)
    model = Transformer(config)
    path = model.save(args.out, dtype=resolve_dtype(args.dtype))
    print(f"wrote {path} ({args.preset}): {_param_summary(model)}")


def cmd_info(args) -> None:
    from minimind.model import load_model

    model = load_model(args.model, device="cpu")
    c = model.config
    kind = f"Qwen3-MoE, {c.num_experts} experts top-{c.num_experts_per_tok}" if c.is_moe else "Qwen3 (dense)"
    print(f"{args.model}: {kind}, {_param_summary(model)}")
    print(f"  hidden {c.hidden_size}, {c.num_hidden_layers} layers, heads {c.num_attention_heads} "
          f"(kv {c.num_key_value_heads}, dim {c.head_dim}), vocab {c.vocab_size}, "
          f"context {c.max_position_embeddings}, rope θ {c.rope_theta:g}"
          + (f", {c.rope_scaling['rope_type']} ×{c.rope_scaling['factor']:g}" if c.rope_scaling else ""))


def cmd_generate(args) -> None:
    from minimind.infer import generate
    from minimind.model import load_model
    from minimind.runtime import resolve_dtype

    model = load_model(args.model, device=args.device, dtype=resolve_dtype(args.dtype))
    start, out = time.perf_counter(), []
    for token in generate(model, args.prompt_ids, args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, seed=args.seed, stop=(model.config.eos_token_id,)):
        out.append(token)
    seconds = time.perf_counter() - start
    print(" ".join(map(str, out)))
    print(f"{len(out)} tokens in {seconds:.2f} s ({len(out) / seconds:.1f} tokens/s)", file=sys.stderr)


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _param_summary(model) -> str:
    total, active = model.num_params(), model.num_params(active=True)
    return f"{_millions(total)} parameters" + (f" ({_millions(active)} active)" if active != total else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    p = sub.add_parser("presets", help="list the model presets and their parameter counts")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("init", help="write a randomly initialised model directory")
    p.add_argument("--preset", required=True, help="model preset (see `minimind presets`)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default=None, help="dtype of the saved weights (default float32)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model config overrides, e.g. num_experts=8")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("info", help="describe a model directory")
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="continue a prompt of token ids (raw completion)")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt-ids", type=int, nargs="+", required=True, metavar="ID")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MiniMindError as e:
        print(f"minimind: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
