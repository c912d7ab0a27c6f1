"""DPO, IPO, SimPO and the reward model: the losses against hand-written formulas, the packing of pairs, the
step-0 value ln 2, precomputed reference log-probs, a reward model that transformers reads, and short runs."""

import contextlib
import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minimind.data.loader import TokenData, build_row, collate
from minimind.data.packing import pack_pairs
from minimind.data.prepare import _tokenize
from minimind.model import RewardModel, load_model, load_reward_model
from minimind.rl.rewards import RewardScorer
from minimind.tokenizer import load_tokenizer
from minimind.train.config import load_config
from minimind.train.preference import DPO, preference_loss
from minimind.train.stages import StageData
from minimind.train.trainer import train
from tests.conftest import make_model

TOKENIZER = load_tokenizer()


def pair(question: str, good: str, bad: str) -> dict:
    user = {"role": "user", "content": question}
    return {"chosen": [user, {"role": "assistant", "content": good}],
            "rejected": [user, {"role": "assistant", "content": bad}], "tools": None}


PAIRS = [pair(f"what is {a} plus {b}?", f"{a + b}", f"{a + b + 1}") for a in range(3) for b in range(3)]


def packed_batch(records, seq_len: int = 128) -> tuple[dict, TokenData]:
    docs = _tokenize(records, "dpo", TOKENIZER)
    lengths = [len(ids) for ids, _ in docs]
    data = TokenData.from_arrays(np.concatenate([ids for ids, _ in docs]), np.concatenate([m for _, m in docs]),
                                 np.concatenate([[0], np.cumsum(lengths)]))
    rows = pack_pairs(data.doc_lengths, seq_len)
    return collate([build_row(data, row, seq_len, TOKENIZER.pad_id, with_docs=True) for row in rows],
                   torch.device("cpu")), data


def dpo_stage(**options) -> DPO:
    overrides = [f"dpo.{k}={json.dumps(v)}" for k, v in options.items()]
    config = load_config(None, ["stage=dpo", 'data.train=["x"]', *overrides])
    return DPO(config)


# ---- the losses on fixed log-probs ------------------------------------------------------------------------

LOGPS = {"pc": [-10.0, -12.5, -7.0], "pr": [-11.0, -12.0, -9.5], "rc": [-10.5, -12.0, -7.5],
         "rr": [-10.5, -12.5, -9.0], "nc": [4.0, 5.0, 2.0], "nr": [5.0, 3.0, 2.0]}


def hand(kind: str, pc, pr, rc, rr, nc, nr, beta, eps, gamma):
    """The papers' formulas, one pair at a time, written with exp/log only."""
    def log_sigmoid(x):
        return -torch.log1p(torch.exp(-x))
    if kind == "sigmoid":
        z = beta * ((pc - rc) - (pr - rr))
        return -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z)
    if kind == "ipo":
        return ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 * beta)) ** 2
    z = beta * pc / nc - beta * pr / nr - gamma
    return -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z)


@pytest.mark.parametrize("kind,eps", [("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("simpo", 0.0),
                                      ("simpo", 0.2)])
def test_losses_and_gradients_equal_the_hand_written_formulas(kind, eps):
    ours = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k in ("pc", "pr")) for k, v in LOGPS.items()}
    theirs = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in ours.items()}
    loss, chosen, rejected = preference_loss(kind, ours["pc"], ours["pr"], ours["rc"], ours["rr"], ours["nc"],
                                             ours["nr"], beta=0.3, label_smoothing=eps, simpo_gamma=0.4)
    expected = torch.stack([hand(kind, *(theirs[k][i] for k in ("pc", "pr", "rc", "rr", "nc", "nr")),
                                 beta=0.3, eps=eps, gamma=0.4) for i in range(3)])
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    expected.sum().backward()
    for k in ("pc", "pr"):
        torch.testing.assert_close(ours[k].grad, theirs[k].grad)
    if kind == "sigmoid":
        torch.testing.assert_close(chosen, 0.3 * (ours["pc"] - ours["rc"]).detach())
        torch.testing.assert_close(rejected, 0.3 * (ours["pr"] - ours["rr"]).detach())


# ---- packing and per-sequence log-probs ---------------------------------------------------------------------

def test_pairs_pack_whole_and_long_pairs_are_cut_evenly():
    rows = pack_pairs([30, 40, 10, 10, 100, 90, 5, 200], seq_len=128)
    placed = [piece for row in rows for piece in row]
    assert sorted(d for d, _, _ in placed) == list(range(8))
    for row in rows:
        assert sum(n for _, _, n in row) <= 128
        docs = [d for d, _, _ in row]
        assert all(docs[i] % 2 == 0 and docs[i + 1] == docs[i] + 1 for i in range(0, len(docs), 2))
    lengths = {d: n for d, _, n in placed}
    assert (lengths[4], lengths[5]) == (64, 64)           # both long: half a row each
    assert (lengths[6], lengths[7]) == (5, 123)           # a short side keeps all of itself


def test_packed_sequence_logps_equal_each_conversation_alone():
    batch, data = packed_batch(PAIRS)
    model = make_model()
    stage = dpo_stage()
    stage.reference = copy.deepcopy(model)
    scores = stage._pairs(model, batch, "train")
    chosen, rejected, valid = scores.policy_chosen, scores.policy_rejected, scores.valid
    got = sorted(torch.cat([chosen[valid], rejected[valid]]).tolist())
    expected = []
    for d in range(data.num_docs):
        ids, mask = data.doc(d)
        x = torch.tensor(ids.astype(np.int64))[None]
        logps = F.log_softmax(model(x).logits[0, :-1].float(), -1).gather(1, x[0, 1:, None])[:, 0]
        expected.append((logps * torch.tensor(mask[1:].astype(np.float32))).sum().item())
    assert int(valid.sum()) == len(PAIRS)
    np.testing.assert_allclose(got, sorted(expected), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_loss_at_step_0_is_ln2(precompute, tmp_path):
    """With the policy equal to its reference every margin is 0: the loss is -log σ(0) = ln 2 per pair, and
    the precomputed reference log-probs give exactly what the live reference does."""
    batch, data = packed_batch(PAIRS)
    start = make_model().save(tmp_path / "start")
    model = load_model(start)
    stage = dpo_stage(precompute_reference=precompute, beta=0.5)
    config = load_config(None, ['data.train=["x"]', "batch_size=3", "data.seq_len=128", f"model={start}"])
    stage.setup(model, StageData(data, pack_pairs(data.doc_lengths, 128), None, []), config, torch.device("cpu"),
                contextlib.nullcontext())
    assert (stage.reference is None) == precompute
    loss, aux, metrics = stage.loss(model, batch)
    count = stage.count(batch)
    assert int(count) == len(PAIRS)
    assert abs(loss.item() / count.item() - math.log(2)) < 1e-6
    assert metrics["reward_margin"].abs().item() < 1e-5
    loss.backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_a_pair_without_targets_is_not_counted():
    long_question = " ".join(["word"] * 200)
    batch, _ = packed_batch([pair(long_question, "yes", "no"), PAIRS[0]], seq_len=128)
    stage = dpo_stage()
    assert int(stage.count(batch)) == 1


# ---- training runs ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def preference_files(tmp_path_factory):
    from minimind.data.default.generators import preference_pairs

    root = tmp_path_factory.mktemp("pairs")
    for name, n, seed in (("train", 600, 0), ("val", 64, 1)):
        records = preference_pairs(n, seed)
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return root


def run_config(root, out, stage, **changes):
    overrides = {"stage": stage, "model": "tiny", "out": str(out), "batch_size": 4, "max_steps": 10,
                 "log_every": 5, "eval_every": 0, "save_every": 0, "dtype": "fp32", "seed": 0, "eval_batches": 4,
                 "data": {"train": [str(root / "train.jsonl")], "val": [str(root / "val.jsonl")], "seq_len": 256,
                          "prepared": str(root / "prepared")},
                 "optim": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.0}} | changes
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def val_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").open() if json.loads(line)["kind"] == "val"]


def test_reward_model_learns_the_default_preferences_and_transformers_reads_it(preference_files, tmp_path):
    """Bradley–Terry on the default data's generated pairs: held-out accuracy rises well above chance (0.5; at
    least 0.75 on the AMD CI machine, 0.746 on a Xeon with AMX, whose fp32 kernels round differently); the saved
    directory is a Qwen3ForSequenceClassification whose scores in transformers equal ours."""
    out = tmp_path / "rm"
    model_dir = train(run_config(preference_files, out, "reward", max_steps=200, log_every=50, eval_batches=16))
    before, after = val_metrics(out)
    assert before["pairs"] == after["pairs"] >= 16
    assert after["accuracy"] >= 0.7 and after["accuracy"] > before["accuracy"] + 0.15
    assert after["loss"] < before["loss"]

    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert type(theirs).__name__ == "Qwen3ForSequenceClassification"
    scorer = RewardScorer.load(model_dir, device="cpu")
    conversations = [p["chosen"] for p in PAIRS[:3]] + [p["rejected"] for p in PAIRS[:3]]
    ours = scorer.score(conversations)
    for conversation, score in zip(conversations, ours, strict=True):
        ids = torch.tensor([TOKENIZER.render_chat(conversation)[0]])
        torch.testing.assert_close(theirs(ids).logits[0, 0].item(), score, atol=1e-4, rtol=1e-4)
    again = load_reward_model(model_dir)
    assert isinstance(again, RewardModel) and again.score.weight.shape == (1, again.config.hidden_size)


def test_dpo_run_raises_held_out_preference(preference_files, tmp_path):
    """A tiny policy from scratch: DPO raises the held-out reward accuracy and the policy's own
    chosen-over-rejected preference, and logs the implicit rewards every step."""
    train(run_config(preference_files, tmp_path / "live", "dpo", dpo={"beta": 0.5}, max_steps=60, log_every=20,
                     eval_batches=16))
    before, after = val_metrics(tmp_path / "live")
    assert abs(before["loss"] - math.log(2)) < 1e-5 and before["reward_accuracy"] == 0.0
    assert after["loss"] < before["loss"] - 0.2
    assert after["reward_accuracy"] > 0.7
    assert after["preference_accuracy"] > before["preference_accuracy"] + 0.05
    train_metrics = [json.loads(line) for line in (tmp_path / "live" / "metrics.jsonl").open()
                     if json.loads(line)["kind"] == "train"]
    assert {"reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy"} <= set(train_metrics[-1])


def test_precomputed_reference_trains_to_the_same_weights(preference_files, tmp_path):
    from safetensors.torch import load_file

    runs = [train(run_config(preference_files, tmp_path / str(pre), "dpo", max_steps=6,
                             dpo={"beta": 0.5, "precompute_reference": pre})) for pre in (False, True)]
    a, b = (load_file(run / "model.safetensors") for run in runs)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.parametrize("command,stage,extra", [("reward-model", "reward", []),
                                                 ("dpo", "dpo", ["dpo.beta=0.5"])])
def test_cli_runs_checkpoint_and_resume_exactly(preference_files, tmp_path, command, stage, extra):
    """`minimind dpo` / `minimind reward-model` through the one trainer: a run stopped after its step-4
    checkpoint and resumed ends with the weights of the uninterrupted run."""
    import shutil

    from safetensors.torch import load_file

    from minimind.cli import main
    from minimind.overrides import to_dict

    def argv(out):
        config = run_config(preference_files, out, stage, max_steps=8, save_every=4, eval_batches=1)
        flat = [f"{k}={json.dumps(v)}" for k, v in to_dict(config).items() if k != "stage"]
        return [command, *flat, *extra]

    assert main(argv(tmp_path / "full")) == 0
    assert main(argv(tmp_path / "part")) == 0
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-000008")
    assert main([*argv(tmp_path / "part"), "--resume"]) == 0
    a, b = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if stage == "reward":
        assert "score.weight" in a and "lm_head.weight" not in a


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_dpo_two_processes_match_one_process(preference_files, tmp_path):
    """2 DDP ranks × 1 micro-batch = 1 process × 2 accumulated micro-batches: the loss is normalised by the
    pairs of the whole step, so the weights agree."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from minimind.overrides import to_dict

    def run(out, **changes):
        return run_config(preference_files, out, "dpo", batch_size=2, tokens_per_step=1024, max_steps=3,
                          dpo={"beta": 0.5}, eval_batches=1, **changes)

    single = train(run(tmp_path / "single"))
    flat = [f"{k}={json.dumps(v)}" for k, v in to_dict(run(tmp_path / "ddp")).items() if k != "stage"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", "29537", "-m", "minimind", "dpo", *flat],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(single / "model.safetensors"), load_file(tmp_path / "ddp" / "model" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
