import json
import subprocess
import sys

import torch

from minimind import load_model
from minimind.cli import main
from minimind.tokenizer import load_tokenizer
from minimind.tokenizer.tokenizer import DEFAULT_DIR
from tests.conftest import make_model


def test_init_writes_a_model_directory(tmp_path, capsys):
    assert main(["init", "--preset", "tiny-moe", "--out", str(tmp_path / "m"), "--seed", "3",
                 "num_experts=8", "num_experts_per_tok=1"]) == 0
    # 409,600 embedding + 2 layers × (12,288 attention + 160 norms + 512 router + 8 × 18,432 experts) + 64
    assert "0.73M parameters (0.47M active)" in capsys.readouterr().out
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["num_experts"] == 8 and config["architectures"] == ["Qwen3MoeForCausalLM"]
    a = load_model(tmp_path / "m", device="cpu")
    main(["init", "--preset", "tiny-moe", "--out", str(tmp_path / "n"), "--seed", "3", "num_experts=8",
          "num_experts_per_tok=1"])
    assert torch.equal(a.lm_head.weight, load_model(tmp_path / "n", device="cpu").lm_head.weight)   # seeded


def test_presets_lists_counts(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "minimind-3-moe" in out and "198.42M" in out and "63.94M" in out


def test_info(tmp_path, capsys):
    main(["init", "--preset", "tiny", "--out", str(tmp_path / "m"), 'rope_scaling={"rope_type":"yarn","factor":4}'])
    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "m")]) == 0
    assert "Qwen3 (dense), 0.51M parameters" in (out := capsys.readouterr().out) and "yarn ×4" in out


def test_generate_greedy_equals_naive_decoding(tmp_path, capsys):
    model = make_model()
    model.save(tmp_path / "m")
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt-ids", "1", "77", "--max-new-tokens", "8"]) == 0
    printed = [int(t) for t in capsys.readouterr().out.split()]
    ids = torch.tensor([[1, 77]])
    with torch.no_grad():
        for _ in range(8):                                   # full forward each step, no cache
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    assert printed == ids[0, 2:].tolist()


def test_errors_are_one_line_without_traceback(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "qwen3"}')
    cases = [
        (["info", "--model", str(tmp_path / "m")], "config.json: missing field 'vocab_size'"),
        (["init", "--preset", "huge", "--out", str(tmp_path / "x")], "unknown preset 'huge'"),
        (["init", "--preset", "tiny", "--out", str(tmp_path / "x"), "hiden_size=3"], "unknown config key 'hiden_size'"),
    ]
    for argv, message in cases:
        r = subprocess.run([sys.executable, "-m", "minimind.cli", *argv], capture_output=True, text=True)
        assert r.returncode == 2
        assert r.stderr.strip() == f"minimind: error: {r.stderr.strip().removeprefix('minimind: error: ')}"
        assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_generation_input(tmp_path, capsys):
    make_model().save(tmp_path / "m")
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt-ids", "99999"]) == 2
    assert "prompt token ids must be in 0..6399" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt-ids", "1", "--temperature", "-1"]) == 2
    assert "invalid sampling value: temperature must be ≥ 0" in capsys.readouterr().err


def test_init_carries_the_default_tokenizer_and_generates_text(tmp_path, capsys):
    main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")])
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in (tmp_path / "m").iterdir()}
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "To be", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("To be")


def test_data_prepare_then_cache_hit(tmp_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text('{"text": "hello world"}\n{"text": 7}\n')
    argv = ["data", "prepare", "--stage", "pretrain", "--data", str(data), "--tokenizer",
            str(DEFAULT_DIR), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "p.jsonl:2: text: must be a string, got int" in capsys.readouterr().err
    assert main([*argv, "--skip-bad-lines"]) == 0
    out = capsys.readouterr().out
    assert "1 records → 1 documents" in out and "skipped 1 bad lines" in out
    assert main([*argv, "--skip-bad-lines"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_chat_one_shot_is_deterministic_and_prints_only_the_reply(tmp_path, capsys):
    make_model().save(tmp_path / "m", tokenizer=load_tokenizer())
    argv = ["chat", "--model", str(tmp_path / "m"), "--prompt", "Hello", "--temperature", "0",
            "--max-new-tokens", "8"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert main(argv) == 0
    second = capsys.readouterr()
    assert first.out == second.out and first.out.strip()
    assert "minimind>" not in first.out and "tokens/s" not in first.out


def test_chat_repl_commands(tmp_path):
    make_model().save(tmp_path / "m", tokenizer=load_tokenizer())
    script = "/system Be brief.\nhello\n/think on\nwhy?\n/reset\n/exit\n"
    r = subprocess.run([sys.executable, "-m", "minimind", "chat", "--model", str(tmp_path / "m"),
                        "--max-new-tokens", "6", "--seed", "1"], input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "(system: 'Be brief.')" in r.stderr and "(thinking on)" in r.stderr and "(history cleared)" in r.stderr
    assert r.stderr.count("tokens/s") == 2 and r.stdout.count("minimind> ") == 2


def test_chat_rejects_an_empty_prompt_and_a_broken_model(tmp_path, capsys):
    make_model().save(tmp_path / "m", tokenizer=load_tokenizer())
    assert main(["chat", "--model", str(tmp_path / "m"), "--prompt", "  "]) == 2
    assert "empty prompt" in capsys.readouterr().err
    (tmp_path / "m" / "model.safetensors").write_bytes(b"junk")
    assert main(["chat", "--model", str(tmp_path / "m"), "--prompt", "hi"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_one_grammar_across_commands():
    """The same flag has the same spelling, values and default wherever it means the same thing; stage commands
    come from the registry; export's file types have their own flag."""
    from minimind.cli import build_parser
    from minimind.train.registry import STAGES

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices

    def flags(command):
        return {o: a for a in commands[command]._actions for o in a.option_strings}

    for command in ("generate", "chat", "serve", "eval"):
        f = flags(command)
        assert f["--dtype"].choices == ("fp32", "bf16", "fp16", "auto") and f["--dtype"].default == "auto"
        assert f["--device"].default == "auto" and f["--kernels"].choices == ("auto", "reference")
    for command in ("init", "lora-merge"):
        assert flags(command)["--dtype"].choices == ("fp32", "bf16", "fp16")
    seeds = {c: flags(c)["--seed"].default for c in ("generate", "chat", "eval", "init", "distill")}
    assert set(seeds.values()) == {0}, seeds
    assert flags("eval")["--window"].default == flags("report")["--window"].default
    assert flags("serve")["--batch-size"].default == flags("distill")["--batch-size"].default == 16
    export = commands["export"]._subparsers._group_actions[0].choices["gguf"]
    assert "--outtype" in {o for a in export._actions for o in a.option_strings}
    assert {spec.command for spec in STAGES.values()} <= set(commands)
    assert "--agent" in flags("ppo") and "--agent" in flags("grpo") and "--generate" in flags("distill")


def test_kernels_flag_chooses_the_model_path(tmp_path, capsys):
    """`--kernels reference` and `auto` give the same greedy tokens; a wrong value is refused by argparse."""
    make_model().save(tmp_path / "m")
    outputs = []
    for kernels in ("auto", "reference"):
        assert main(["generate", "--model", str(tmp_path / "m"), "--prompt-ids", "1", "77", "--max-new-tokens", "6",
                     "--kernels", kernels]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    result = subprocess.run([sys.executable, "-m", "minimind", "chat", "--model", str(tmp_path / "m"),
                             "--kernels", "fast"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'fast'" in result.stderr


def test_data_prepare_reports_what_rows_of_a_length_keep(tmp_path, capsys):
    chats = [{"conversations": [{"role": "user", "content": "say something long " * 8},
                                {"role": "assistant", "content": "a long answer " * 20}]},
             {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    assert main(["data", "prepare", "--stage", "sft", "--data", str(tmp_path / "sft.jsonl"), "--tokenizer",
                 str(DEFAULT_DIR), "--out", str(tmp_path / "p"), "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "rows of 64: 1 of 2 documents do not fit whole" in out and "lost" in out


def test_vision_presets_init_info_and_images_on_the_command_line(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    assert main(["presets"]) == 0
    assert "minimind-3v" in (out := capsys.readouterr().out) and "64 tokens per image" in out
    assert main(["init", "--preset", "tiny-v", "--out", str(tmp_path / "v")]) == 0
    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "v")]) == 0
    assert "Llava (siglip tower 2 × 32, 32² / 8 → 16 tokens per image, llava projector)" in capsys.readouterr().out
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "black.png")
    assert main(["chat", "--model", str(tmp_path / "v"), "--image", str(tmp_path / "black.png"), "--prompt", "hi",
                 "--max-new-tokens", "3", "--temperature", "0"]) == 0
    assert main(["generate", "--model", str(tmp_path / "v"), "--image", str(tmp_path / "black.png"), "--prompt",
                 "A", "--max-new-tokens", "3"]) == 0
    capsys.readouterr()
    main(["init", "--preset", "tiny", "--out", str(tmp_path / "t")])
    assert main(["chat", "--model", str(tmp_path / "t"), "--image", str(tmp_path / "black.png"), "--prompt", "hi"]) == 2
    assert "--image: this model reads no images" in capsys.readouterr().err
    assert main(["chat", "--model", str(tmp_path / "v"), "--image", str(tmp_path / "nope.png"), "--prompt", "hi"]) == 2
    assert "nope.png not found" in capsys.readouterr().err
    record = {"conversations": [{"role": "user", "content": "<image>\nq"}, {"role": "assistant", "content": "a"}],
              "image": "black.png"}
    (tmp_path / "v.jsonl").write_text(json.dumps(record) + "\n")
    prepare = ["data", "prepare", "--stage", "vision", "--data", str(tmp_path / "v.jsonl"), "--tokenizer",
               str(DEFAULT_DIR), "--out", str(tmp_path / "p")]
    assert main(prepare) == 2 and "--vision: give a vision preset" in capsys.readouterr().err
    assert main([*prepare, "--vision", str(tmp_path / "v")]) == 0
    assert "1 records → 1 documents" in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["num_images"] == 1


def test_a_diffusion_model_generates_with_its_trajectory_and_is_evaluated_as_a_bound(tmp_path, capsys):
    from minimind.tokenizer import load_tokenizer

    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "d"), "objective=diffusion"]) == 0
    load_tokenizer().save(tmp_path / "d")
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "d"), "--prompt", "Once", "--max-new-tokens", "8",
                 "--block-length", "4", "--steps", "2", "--temperature", "0", "--show-steps"]) == 0
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert len(steps) == 4 and "░" in steps[0] and "░" not in steps[1]     # two blocks of 2 steps, 2 tokens each
    (tmp_path / "t.txt").write_text("the king speaks of love and war")
    assert main(["eval", "--model", str(tmp_path / "d"), "--task", "bpb", "--data", str(tmp_path / "t.txt"),
                 "--mc-samples", "4"]) == 0
    assert "≤ " in (out := capsys.readouterr().out) and "upper bound" in out


def test_init_from_a_dense_model_makes_a_hybrid_keeping_its_weights(tmp_path, capsys):
    make_model().save(tmp_path / "dense")
    assert main(["init", "--from", str(tmp_path / "dense"), "--out", str(tmp_path / "h"),
                 'layer_types=["linear_attention","full_attention"]', "linear_key_head_dim=16",
                 "linear_value_head_dim=16", "linear_num_key_heads=2", "linear_num_value_heads=2"]) == 0
    assert "1 fresh DeltaNet layers" in capsys.readouterr().out
    dense, hybrid = load_model(tmp_path / "dense", device="cpu"), load_model(tmp_path / "h", device="cpu")
    assert hybrid.config.is_hybrid
    torch.testing.assert_close(hybrid.model.layers[1].self_attn.q_proj.weight,
                               dense.model.layers[1].self_attn.q_proj.weight)
    assert main(["init", "--from", str(tmp_path / "dense"), "--out", str(tmp_path / "x"), "hidden_size=128"]) == 2


def test_omni_presets_init_info_and_sound_on_the_command_line(tmp_path, capsys):
    import soundfile

    from minimind.data.audio import write_wav
    from tests.omni.conftest import tone

    assert main(["presets"]) == 0
    assert "mini-o" in (out := capsys.readouterr().out) and "8 × 256 units per 80 ms" in out
    assert main(["init", "--preset", "tiny-o", "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert main(["info", "--model", str(tmp_path / "o")]) == 0
    assert "MiniMind-O (audio encoder 1 × 32" in capsys.readouterr().out
    write_wav(tmp_path / "q.wav", tone(0.5))
    assert main(["chat", "--model", str(tmp_path / "o"), "--audio", str(tmp_path / "q.wav"), "--max-new-tokens", "4",
                 "--temperature", "0"]) == 0
    assert "error" not in capsys.readouterr().err
    assert main(["chat", "--model", str(tmp_path / "o"), "--prompt", "Say: hi", "--speak", str(tmp_path / "a.wav"),
                 "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert "spoke" in capsys.readouterr().err
    assert soundfile.info(str(tmp_path / "a.wav")).samplerate == 16000
    main(["init", "--preset", "tiny", "--out", str(tmp_path / "t")])
    capsys.readouterr()
    assert main(["chat", "--model", str(tmp_path / "t"), "--audio", str(tmp_path / "q.wav")]) == 2
    assert "--audio: this model hears no audio" in capsys.readouterr().err
    assert main(["chat", "--model", str(tmp_path / "o"), "--audio", str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav" in capsys.readouterr().err
