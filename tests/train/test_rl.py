"""RL: rewards, advantages, GAE and policy losses against hand computations; the calculator's refusals; a GRPO
run through the trainer whose clip acts when num_iterations > 1, and which resumes exactly."""

import dataclasses
import json
import math
import time

import pytest
import torch

from minimind.data.default.calculator import CalculatorError, calculate
from minimind.rl.config import GRPOConfig, PPOConfig
from minimind.rl.losses import aggregate, gae, group_advantages, k3, masked_whiten, policy_loss
from minimind.rl.rewards import Rewards, accuracy, extract_answer, repetition, think_format
from minimind.train.config import load_config
from minimind.train.grpo import overlong
from minimind.train.trainer import train
from tests.conftest import make_model

# ---- rewards --------------------------------------------------------------------------------------------------


def test_answer_extraction_and_accuracy():
    assert extract_answer("7 * 6 = 42.\n#### 42") == "42"
    assert extract_answer("First 3 + 4 = 7, then 7 * 2 = 14 apples") == "14"
    assert extract_answer("#### 1,234") == "1234" and extract_answer("no number") is None
    records = [{"answer": "42"}, {"answer": "42"}, {"answer": "2.5"}, {"answer": "7"}]
    assert accuracy(["#### 42", "#### 41", "so 2.50", "nothing"], records) == [1.0, 0.0, 1.0, 0.0]
    assert think_format(["<think>\nwork\n</think>\n\n42", "42", "<think>\n\n</think>\n\n42"], [{}] * 3) == [1, 0, 0]
    assert repetition(["a b c a b c a b c", "one two three four"], [{}] * 2)[1] == 0.0
    assert repetition(["a b c a b c a b c"], [{}])[0] == pytest.approx(-(1 - 3 / 7))


def test_weighted_rewards_and_user_functions(tmp_path, monkeypatch):
    (tmp_path / "myrewards.py").write_text("def short(completions, records):\n"
                                           "    return [1.0 if len(c) < 5 else 0.0 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rewards = Rewards({"accuracy": 1.0, "myrewards:short": 0.5})
    totals, parts = rewards(["#### 4", "the answer is 4 I think"], [{"answer": "4"}] * 2)
    assert parts == {"accuracy": [1.0, 1.0], "myrewards:short": [0.0, 0.0]} and totals == [1.0, 1.0]
    totals, parts = rewards(["4", "#### 5"], [{"answer": "4"}] * 2)
    assert totals == [1.5, 0.0] and parts["myrewards:short"] == [1.0, 0.0]
    from minimind.errors import MiniMindError
    with pytest.raises(MiniMindError, match="unknown reward 'acuracy'"):
        Rewards({"acuracy": 1.0})


def test_soft_overlong_penalty():
    assert overlong([10, 80, 90, 100], max_new_tokens=100, buffer=20, penalty=1.0) == [0.0, 0.0, -0.5, -1.0]
    assert overlong([100], 100, 0, 1.0) == [0.0]


# ---- advantages and losses ------------------------------------------------------------------------------------

def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    std = math.sqrt(1 / 3)                          # unbiased std of [1, 0, 0, 1]
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, 4)[:4], expected)
    assert torch.equal(group_advantages(rewards, 4)[4:], torch.zeros(4))          # a zero-variance group
    torch.testing.assert_close(group_advantages(rewards, 4, scale_std=False)[:4], torch.tensor([.5, -.5, -.5, .5]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.8, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    gamma, lam = 0.9, 0.8
    d2 = 1.0 - 0.8                                  # the last token: V after it = 0
    d1 = 0.0 + gamma * 0.8 - 0.4
    d0 = 0.0 + gamma * 0.4 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(returns[:, :3], torch.tensor([[a0 + 0.5, a1 + 0.4, a2 + 0.8]]))
    white = masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), mask)
    torch.testing.assert_close(white[0, :3], torch.tensor([-1.0, 0.0, 1.0]) * math.sqrt(3 / 2), atol=1e-4, rtol=0)


def test_gae_flows_across_a_tool_turn():
    """An agentic row: tokens 0–1 call a tool, 2–3 are its result (masked out), 4 is the answer that earns the
    reward. GAE skips the result: the call's tokens get credit for the final reward, as one episode."""
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.2, 0.3, 7.0, 7.0, 0.6, 9.0]])     # values under the tool result are never read
    mask = torch.tensor([[1, 1, 0, 0, 1, 0]])
    gamma, lam = 0.9, 0.8
    d4 = 1.0 - 0.6
    d1 = 0.0 + gamma * 0.6 - 0.3                   # token 1's next state is token 4's
    d0 = 0.0 + gamma * 0.3 - 0.2
    a4 = d4
    a1 = d1 + gamma * lam * a4
    a0 = d0 + gamma * lam * a1
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([[a0, a1, 0.0, 0.0, a4, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[a0 + 0.2, a1 + 0.3, 0.0, 0.0, a4 + 0.6, 0.0]]))
    assert a1 > 0.3                                  # the call's tokens see the answer's reward


def hand_clip(logp, old, a, lo, hi):
    r = math.exp(logp - old)
    return -min(r * a, min(max(r, 1 - lo), 1 + hi) * a)


@pytest.mark.parametrize("kind", ["clip", "cispo"])
def test_policy_losses_and_gradients_by_hand(kind):
    logps = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.5, -1.9, -0.5]], dtype=torch.float64)
    adv = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)                 # two sequences, same tokens
    lp, o = logps.expand(2, 3), old.expand(2, 3)
    loss, clipped = policy_loss(lp, o, adv, kind, eps_low=0.2, eps_high=0.28, cispo_eps_high=0.5)
    grads = torch.autograd.grad(loss.sum(), logps)[0]
    for i, a in enumerate((1.0, -2.0)):
        for t in range(3):
            x, y = logps[0, t].item(), old[0, t].item()
            r = math.exp(x - y)
            if kind == "clip":
                assert loss[i, t].item() == pytest.approx(hand_clip(x, y, a, 0.2, 0.28))
            else:
                assert loss[i, t].item() == pytest.approx(-min(r, 1.5) * a * x)
    # gradients by hand: clip → -A·r where unclipped, 0 where clipped; cispo → -min(r, 1+ε)·A
    expected = torch.zeros(3, dtype=torch.float64)
    for a in (1.0, -2.0):
        for t in range(3):
            r = math.exp(logps[0, t].item() - old[0, t].item())
            if kind == "clip":
                unclipped = r * a <= min(max(r, 0.8), 1.28) * a
                expected[t] += -a * r if unclipped else 0.0
            else:
                expected[t] += -min(r, 1.5) * a
    torch.testing.assert_close(grads[0], expected)
    assert clipped.any()                             # r = e^0.5 ≈ 1.65 is outside both ranges


def test_k3_and_aggregation():
    logps, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]])
    x = -0.5
    torch.testing.assert_close(k3(logps, ref), torch.tensor([[math.exp(x) - x - 1, 0.0]]))
    per_token = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert [t.item() for t in aggregate(per_token, mask, "token", 8)] == [10.0, 4.0]
    assert [t.item() for t in aggregate(per_token, mask, "sequence", 8)] == [2.0 + 4.0, 2.0]
    assert [t.item() for t in aggregate(per_token, mask, "constant", 8)] == [10.0, 16.0]


# ---- the calculator (the agentic tool) -------------------------------------------------------------------------

@pytest.mark.parametrize("expression", ["__import__('os').system('true')", "(1).__class__", "open('x')",
                                        "[x for x in range(10**9)]", "9 ** 9 ** 9", "10 ** 1000",
                                        "lambda: 1", "a + 1"])
def test_calculator_refuses_and_never_hangs(expression):
    start = time.perf_counter()
    with pytest.raises(CalculatorError):
        calculate(expression)
    assert time.perf_counter() - start < 0.5


def test_calculator_computes_ordinary_expressions_exactly():
    assert calculate("(3 + 4) * 12") == 84
    assert calculate("2 ** 64") == 18446744073709551616
    assert calculate("7 / 2") == 3.5 and calculate("7 // 2") == 3 and calculate("-7 % 3") == 2
    assert calculate("123456789 * 987654321") == 121932631112635269


# ---- GRPO through the trainer ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    for name, rng in (("train", range(40)), ("val", range(40, 48))):
        (root / f"{name}.jsonl").write_text("".join(
            json.dumps({"conversations": [{"role": "user", "content": f"add {a % 7} and {a % 5}"}],
                        "answer": str(a % 7 + a % 5)}) + "\n" for a in rng))
    return root


def grpo_config(root, out, model_dir, **options):
    """A small RL run; each option goes to its section (rl, grpo or ppo)."""
    sections = {"rl": {}, "grpo": {}, "ppo": {}}
    for key, value in options.items():
        section = next((name for name, cls in (("grpo", GRPOConfig), ("ppo", PPOConfig))
                        if key in {f.name for f in dataclasses.fields(cls)}), "rl")
        sections[section][key] = value
    rl = sections.pop("rl")
    overrides = {"stage": "grpo", "model": str(model_dir), "out": str(out), "max_steps": 4, "log_every": 1,
                 "eval_every": 0, "save_every": 0, "dtype": "fp32", "seed": 0,
                 "data": {"train": [str(root / "train.jsonl")], "val": [str(root / "val.jsonl")], "seq_len": 64,
                          "prepared": str(root / "prepared")},
                 "optim": {"lr": 1e-2, "warmup_steps": 0},
                 "rl": {"rewards": {"tests.train.test_rl:text_length": 1.0}, "prompts_per_rollout": 2, "group_size": 4,
                        "max_new_tokens": 12, "num_iterations": 2, "mini_batches": 2, "eval_prompts": 4} | rl,
                 **sections}
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def text_length(completions, records):
    """A reward that varies even for a random model's text (a user function, named by module:function)."""
    return [len(c) / 10 for c in completions]


def flat_for_even_answers(completions, records):
    """Every sample of a prompt with an even answer gets 100 (a group with nothing to learn); the others get
    their length / 10, which varies and stays far below 100 for at most 12 new tokens."""
    return [100.0 if int(r["answer"]) % 2 == 0 else len(c) / 10 for c, r in zip(completions, records, strict=True)]


def train_log(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").open() if json.loads(line)["kind"] == "train"]


def test_grpo_ratio_is_one_first_then_the_clip_acts(prompts, tmp_path):
    """Step 1 of a rollout trains on the policy that sampled it: ρ = 1 exactly, nothing clipped. The later
    steps of the same rollout see a moved policy: ρ ≠ 1 and (with a large learning rate) the clip acts."""
    model_dir = make_model(seed=3).save(tmp_path / "start")
    train(grpo_config(prompts, tmp_path / "run", model_dir))
    log = train_log(tmp_path / "run")
    assert log[0]["ratio"] == pytest.approx(1.0, abs=1e-6) and log[0]["clip_fraction"] == 0.0
    assert any(m["clip_fraction"] > 0 for m in log[1:4])
    assert {"reward_mean", "reward_std", "reward_drawn", "zero_variance_groups", "response_length",
            "rollout_tokens_per_s", "kl", "entropy", "reward_tests.train.test_rl:text_length"} <= set(log[0])
    assert 0 < log[0]["entropy"] < math.log(6400)


def test_dynamic_sampling_trains_on_mixed_groups_and_logs_the_drawn_reward(prompts, tmp_path):
    """With dynamic sampling, the groups of all-equal rewards (even answers here, rewarded 100) are dropped and
    refilled: the groups trained on are the varying ones, whose rewards stay far below 100, while reward_drawn, the
    first draw's mean, includes the flat groups' 100s."""
    model_dir = make_model(seed=3).save(tmp_path / "start")
    config = grpo_config(prompts, tmp_path / "run", model_dir, dynamic_sampling=True, max_refills=3,
                         prompts_per_rollout=4, num_iterations=1, mini_batches=1,
                         rewards={"tests.train.test_rl:flat_for_even_answers": 1.0})
    train(config)
    log = train_log(tmp_path / "run")
    assert any(m["zero_variance_groups"] > 0 for m in log)
    for m in log:
        assert m["reward_std"] > 0 and m["reward_mean"] < 50            # no flat group of 100s is trained on
        if m["zero_variance_groups"] > 0:
            assert m["reward_drawn"] >= 100 * m["zero_variance_groups"]  # the first draw counts them


def test_token_entropy():
    """Uniform logits have entropy ln V; a confident distribution almost none; t = 0 predicts nothing."""
    from minimind.model.loss import token_entropy

    logits = torch.zeros(1, 3, 50)
    logits[0, 1, 7] = 30.0
    h = token_entropy(logits)
    assert h[0, 0] == 0 and h[0, 1] == pytest.approx(math.log(50), abs=1e-5) and h[0, 2] < 1e-6


def test_grpo_resumes_exactly_from_a_rollout_boundary(prompts, tmp_path):
    from safetensors.torch import load_file

    model_dir = make_model(seed=3).save(tmp_path / "start")

    def run(out, **changes):
        config = grpo_config(prompts, out, model_dir, kl_coef=0.1)
        for key, value in ({"max_steps": 8} | changes).items():
            setattr(config, key, value)
        return config

    import shutil

    train(run(tmp_path / "part", save_every=4))
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-000008")      # as if stopped after step 4
    resumed = train(run(tmp_path / "part", save_every=4), resume=True)
    expected = train(run(tmp_path / "whole"))
    a, b = load_file(resumed / "model.safetensors"), load_file(expected / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- agentic rollouts -------------------------------------------------------------------------------------------

class ScriptedEngine:
    """Stands in for the inference engine: turn 1 calls the calculator, turn 2 answers with its result."""

    def __init__(self, model, tokenizer):
        from minimind.infer import Engine
        self.tokenizer, self.real = tokenizer, Engine(model, tokenizer)

    def chat_prompt(self, messages, tools=None):
        return self.real.chat_prompt(messages, tools)

    def generate(self, prompts, params):
        from minimind.infer.engine import Completion

        out = []
        for prompt, p in zip(prompts, params, strict=True):
            first = "<tool_response>" not in self.tokenizer.decode(prompt)
            text = ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "3 + 4"}}\n</tool_call>'
                    if first else "3 + 4 = 7.\n#### 7")
            ids = self.tokenizer.encode(text) + [self.tokenizer.eos_id]
            out.append([Completion(token_ids=ids, text=text, finish_reason="stop", logprobs=[-0.5] * len(ids))
                        for _ in range(p.n)])
        return out


def test_agent_rollout_runs_the_tool_and_masks_its_tokens(prompts, tmp_path, monkeypatch):
    """A two-turn trajectory: the model's own tokens (both turns, each with its <|im_end|>) carry loss weight;
    the prompt, the tool's result and the template around it carry none; the answer reached through the
    calculator is rewarded and counted."""
    import minimind.train.grpo as grpo
    from minimind.train.registry import make_stage

    monkeypatch.setattr(grpo, "Engine", ScriptedEngine)
    model_dir = make_model(seed=3).save(tmp_path / "start")
    config = grpo_config(prompts, tmp_path / "agent", model_dir, agent=True,
                         rewards={"accuracy": 1.0, "tool_use": 0.5})
    from minimind.tokenizer import load_tokenizer
    from minimind.train.distributed import Dist

    stage = make_stage(config)
    from minimind.tokenizer.tokenizer import DEFAULT_DIR

    data = stage.build(config, DEFAULT_DIR, True, lambda: None)
    model = stage.build_model(str(model_dir), torch.device("cpu"))
    stage.setup(model, data, config, torch.device("cpu"), __import__("contextlib").nullcontext())
    tokenizer = load_tokenizer()
    loader = stage.loader(model, tokenizer, data, config, Dist(), torch.device("cpu"))
    buffer = loader._rollout()
    ids, mask = buffer["input_ids"][0].tolist(), buffer["mask"][0].tolist()
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    untrained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert trained == ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "3 + 4"}}\n</tool_call>'
                       "<|im_end|>3 + 4 = 7.\n#### 7<|im_end|>")
    assert "<tool_response>\n7\n</tool_response>" in untrained and "# Tools" in untrained
    assert stage.log["tool_calls"] == 1.0 and stage.log["tool_errors"] == 0.0 and stage.log["reward_tool_use"] == 1.0
    assert stage.log["correct_with_tool"] == stage.log["reward_accuracy"]     # every answer came via the tool
    from minimind.rl.rewards import tool_use
    assert tool_use(["", "", ""], [{"tool_calls": 1, "tool_errors": 0}, {"tool_calls": 2, "tool_errors": 1},
                                   {"tool_calls": 0, "tool_errors": 0}]) == [1.0, 0.0, 0.0]


def test_tools_convert_look_up_and_fail_as_text():
    from minimind.rl.tools import TOOLS, register_tool, run_tool

    allowed = ["calculator", "convert_units", "lookup"]
    assert run_tool({"name": "calculator", "arguments": {"expression": "6 * 7"}}, allowed) == "42"
    assert run_tool({"name": "convert_units", "arguments": {"value": 3, "from_unit": "km", "to_unit": "m"}},
                    allowed) == "3000"
    assert run_tool({"name": "convert_units", "arguments": {"value": 212, "from_unit": "F", "to_unit": "C"}},
                    allowed) == "100"
    assert run_tool({"name": "lookup", "arguments": {"table": "capital", "key": "Japan"}}, allowed) == "Tokyo"
    assert run_tool({"name": "calculator", "arguments": {"expression": "__import__('os')"}}, allowed
                    ).startswith("error:")
    assert run_tool({"name": "convert_units", "arguments": {"value": 1, "from_unit": "kg", "to_unit": "m"}},
                    allowed).startswith("error: cannot convert mass")
    assert run_tool({"name": "lookup", "arguments": {"table": "capital", "key": "Japan"}}, ["calculator"]
                    ) == "error: unknown tool 'lookup'"
    assert run_tool({"name": "calculator", "arguments": "6*7"}, allowed) == "error: arguments must be a JSON object"
    assert run_tool({"name": "calculator", "arguments": {"expr": "1"}}, allowed).startswith("error:")

    register_tool("slow", lambda seconds: time.sleep(seconds) or "done", "sleeps", {"seconds": {"type": "number"}})
    try:
        start = time.perf_counter()
        assert run_tool({"name": "slow", "arguments": {"seconds": 1.0}}, ["slow"], timeout=0.1) == \
            "error: slow took longer than 0.1 s"
        assert time.perf_counter() - start < 0.5
    finally:
        del TOOLS["slow"]


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_ppo_runs_saves_its_critic_beside_the_policy_and_resumes_exactly(prompts, tmp_path, critic):
    """PPO through the trainer: ρ = 1 at the first step, a finite value loss, OUT/model a plain policy and
    OUT/critic a reward-model directory, and a run resumed from a rollout boundary ends identical."""
    import shutil

    from safetensors.torch import load_file

    from minimind.model import is_reward_model

    model_dir = make_model(seed=3).save(tmp_path / "start")

    def run(out, **changes):
        config = grpo_config(prompts, out, model_dir, critic=critic, group_size=2, kl_coef=0.05,
                             kl_in_reward=True)
        config.stage = "ppo"
        for key, value in ({"max_steps": 8} | changes).items():
            setattr(config, key, value)
        config.validate()
        return config

    policy = train(run(tmp_path / "whole"))
    log = train_log(tmp_path / "whole")
    assert log[0]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert all(math.isfinite(m["value_loss"]) for m in log)
    assert "value" not in "".join(load_file(policy / "model.safetensors"))
    assert is_reward_model(tmp_path / "whole" / "critic")

    train(run(tmp_path / "part", save_every=4))
    assert sorted(p.name for p in (tmp_path / "part" / "checkpoints" / "step-000004").iterdir()) == \
        ["critic", "model", "state.pt", "trainer.json"]
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-000008")
    resumed = train(run(tmp_path / "part", save_every=4), resume=True)
    for name in ("model", "critic"):
        a = load_file(resumed.parent / name / "model.safetensors")
        b = load_file(tmp_path / "whole" / name / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_ppo_activation_checkpointing_covers_the_critic_and_computes_the_same_steps(prompts, tmp_path):
    from safetensors.torch import load_file

    model_dir = make_model(seed=3).save(tmp_path / "start")
    runs = []
    for recompute in (False, True):
        config = grpo_config(prompts, tmp_path / str(recompute), model_dir, group_size=2)
        config.stage, config.activation_checkpointing = "ppo", recompute
        runs.append(train(config).parent)
    for name in ("model", "critic"):
        a, b = (load_file(run / name / "model.safetensors") for run in runs)
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5, name


def test_vllm_rollout_backend_against_a_stand_in_vllm(prompts, tmp_path, monkeypatch):
    """vLLM cannot run here; a stand-in module with vLLM's API checks our side: the policy's weights reach
    the model under transformers' names before each rollout, prompts go in as token ids with the sampling
    values, and outputs come back as Completions ending with <|im_end|> — then GRPO trains on them."""
    import sys
    import types

    from minimind.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    answer = tokenizer.encode("#### 7")
    loaded, calls = [], []

    class Logprob:
        def __init__(self, value):
            self.logprob = value

    class Output:
        def __init__(self, seed):
            self.token_ids = answer if seed % 2 else answer[:1]          # vLLM leaves the stop id out
            self.logprobs = [{t: Logprob(-0.1)} for t in self.token_ids]
            self.finish_reason = "stop"

    class FakeLLM:
        def __init__(self, model, **kwargs):
            assert (Path(model) / "config.json").is_file() and kwargs["enable_prefix_caching"]
            runner = types.SimpleNamespace(model=types.SimpleNamespace(load_weights=lambda w: loaded.append(dict(w))))
            self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
                driver_worker=types.SimpleNamespace(model_runner=runner)))

        def generate(self, prompts, params, use_tqdm):
            calls.append((prompts, params))
            return [types.SimpleNamespace(outputs=[Output(p.seed + j) for j in range(p.n)]) for p in params]

    class FakeParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeParams))
    from pathlib import Path

    model_dir = make_model(seed=3).save(tmp_path / "start")
    config = grpo_config(prompts, tmp_path / "run", model_dir, rollout_backend="vllm")
    config.eval_every = config.max_steps = 4
    train(config)
    assert len(loaded) == 1 and "model.layers.0.self_attn.q_proj.weight" in loaded[0]
    assert "lm_head.weight" not in loaded[0] or not make_model(seed=3).config.tie_word_embeddings
    prompts_sent, params_sent = calls[0]
    assert all(isinstance(p["prompt_token_ids"], list) for p in prompts_sent)
    assert params_sent[0].n == 4 and params_sent[0].max_tokens == 12 and params_sent[0].logprobs == 0
    assert tokenizer.eos_id in params_sent[0].stop_token_ids
    log = train_log(tmp_path / "run")
    assert log[0]["reward_std"] > 0 and math.isfinite(log[-1]["loss"])
    from minimind.rl.vllm_rollouts import VLLMEngine

    engine = VLLMEngine.__new__(VLLMEngine)            # only the output conversion, without starting vLLM
    engine.tokenizer = tokenizer
    done = engine._completion(Output(1), tokenizer.eos_id)
    assert done.token_ids == answer + [tokenizer.eos_id] and done.text == "#### 7" and done.finish_reason == "stop"
    assert done.logprobs == [-0.1] * len(answer) + [0.0]
