"""Distillation: the divergences against hand-computed values, the mixed loss and its chunking, a student's
divergence to its teacher falling in a short run, and black-box answer generation."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from minimind.cli import main
from minimind.train.config import load_config
from minimind.train.distill import Distill, divergence
from minimind.train.trainer import train
from tests.conftest import make_model
from tests.train.test_trainer import config, data, metrics  # noqa: F401  (the fixture is shared)

P = [0.5, 0.25, 0.25]          # the teacher
Q = [0.25, 0.25, 0.5]          # the student


def test_divergences_equal_hand_computed_values():
    teacher, student = torch.tensor(P).log(), torch.tensor(Q).log()
    forward = sum(p * math.log(p / q) for p, q in zip(P, Q, strict=True))          # 0.25·ln 2
    reverse = sum(q * math.log(q / p) for p, q in zip(P, Q, strict=True))
    assert abs(forward - 0.25 * math.log(2)) < 1e-12
    assert abs(divergence(student, teacher, "forward").item() - forward) < 1e-6
    assert abs(divergence(student, teacher, "reverse").item() - reverse) < 1e-6
    beta = 0.3
    M = [beta * p + (1 - beta) * q for p, q in zip(P, Q, strict=True)]
    jsd = (beta * sum(p * math.log(p / m) for p, m in zip(P, M, strict=True))
           + (1 - beta) * sum(q * math.log(q / m) for q, m in zip(Q, M, strict=True)))
    assert abs(divergence(student, teacher, "jsd", jsd_beta=beta).item() - jsd) < 1e-6
    tempered = F.softmax(teacher / 2, -1), F.softmax(student / 2, -1)
    expected = (tempered[0] * (tempered[0] / tempered[1]).log()).sum().item()
    assert abs(divergence(student, teacher, "forward", temperature=2.0).item() - expected) < 1e-6
    assert divergence(teacher, teacher, "jsd").abs().item() < 1e-7


def batch_of(conversations):
    from minimind.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    rendered = [tokenizer.render_chat(c) for c in conversations]
    T = max(len(ids) for ids, _ in rendered)
    input_ids = torch.full((len(rendered), T), tokenizer.pad_id)
    labels = torch.full((len(rendered), T), -100)
    for i, (ids, mask) in enumerate(rendered):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(ids)] = torch.where(torch.tensor(mask) == 1, torch.tensor(ids), -100)
        labels[i, 0] = -100
    position_ids = torch.arange(T).expand(len(rendered), T)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_the_loss_mixes_ce_and_the_divergence_on_targets_only_and_chunks_change_nothing(kind):
    student, teacher = make_model(seed=0), make_model(seed=1)
    batch = batch_of([[{"role": "user", "content": f"add {a} and 2"}, {"role": "assistant", "content": f"{a + 2}"}]
                      for a in range(3)])
    stages = []
    for chunk in (1024, 5):
        cfg = load_config(None, ['stage=distill', 'data.train=["x"]', 'distill.teacher=t', f"distill.divergence={kind}",
                                 "distill.alpha=0.3", "distill.temperature=1.5", f"distill.chunk_tokens={chunk}"])
        stage = Distill(cfg)
        stage.teacher = teacher
        stages.append(stage)
    total, _, parts = stages[0].loss(student, batch)

    s_logits, t_logits = student(batch["input_ids"]).logits[:, :-1], teacher(batch["input_ids"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    ce = F.cross_entropy(s_logits[keep], targets[keep], reduction="sum")
    div = divergence(s_logits[keep], t_logits[keep], kind, temperature=1.5).sum()
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["divergence"], div)
    torch.testing.assert_close(total, 0.3 * ce + 0.7 * 1.5 ** 2 * div)
    torch.testing.assert_close(stages[1].loss(student, batch).total, total)
    assert stages[0].count(batch) == keep.sum()


def test_student_divergence_to_its_teacher_falls(data, tmp_path):  # noqa: F811
    teacher = make_model(seed=1).save(tmp_path / "teacher")
    files = {"train": [str(data / "sft.jsonl")], "val": [str(data / "sft.jsonl")], "seq_len": 64,
             "prepared": str(data / "prepared")}
    out = tmp_path / "student"
    train(config(data, out, stage="distill", data=files, max_steps=20, eval_every=10, eval_batches=2,
                 distill={"teacher": str(teacher), "alpha": 0.0, "divergence": "forward"}))
    val = metrics(out, "val")
    assert [m["step"] for m in val] == [0, 10, 20]
    assert val[2]["divergence"] < 0.5 * val[0]["divergence"]
    assert "divergence" in metrics(out)[-1] and "ce" in metrics(out)[-1]


def test_distill_generate_writes_the_teachers_answers_as_sft_data(tmp_path, capsys):
    teacher = make_model(seed=1).save(tmp_path / "teacher")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": f"add {a} and 2"},
                                                             {"role": "assistant", "content": "?"}]}) + "\n"
                               for a in range(4)))
    out = tmp_path / "answers.jsonl"
    assert main(["distill", "--generate", "--teacher", str(teacher), "--prompts", str(prompts), "--out", str(out),
                 "--temperature", "0", "--max-new-tokens", "8", "--n", "2", "--keep-truncated"]) == 0
    assert "8 answers to 4 prompts" in capsys.readouterr().out
    from minimind.data.formats import read_records
    from minimind.infer import Engine, SamplingParams
    from minimind.tokenizer import load_tokenizer

    records = list(read_records(out, "sft"))
    assert len(records) == 8
    engine = Engine(make_model(seed=1), load_tokenizer())
    first = engine.chat([{"role": "user", "content": "add 0 and 2"}], SamplingParams(temperature=0, max_new_tokens=8))
    assert records[0]["messages"][:1] == [{"role": "user", "content": "add 0 and 2"}]
    assert records[0]["messages"][1]["content"] == first[0][0].text
