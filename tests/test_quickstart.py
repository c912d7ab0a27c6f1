import pytest
import yaml

from minimind import quickstart as quickstart_module


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, monkeypatch):
    """The main job with the tiny test model and a few steps: every phase runs and the report has its parts."""
    configs = tmp_path / "configs"
    configs.mkdir()
    for stage in ("pretrain", "sft"):
        config = yaml.safe_load((quickstart_module.CONFIGS / f"{stage}.yaml").read_text())
        config.update(max_steps=3, log_every=1, eval_every=0, save_every=0, eval_batches=1, dtype="fp32")
        if stage == "pretrain":
            config["model"] = "tiny"
        (configs / f"{stage}.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(quickstart_module, "CONFIGS", configs)
    monkeypatch.setattr(quickstart_module, "ARITHMETIC_QUESTIONS", 2)
    report = quickstart_module.quickstart(tmp_path / "qs").read_text()
    for heading in ("## Timings", "## Training", "## Continuations", "## Chats", "## Report card"):
        assert heading in report
    assert "| pretrain | 3 |" in report and "| sft | 3 |" in report
    assert (tmp_path / "qs" / "sft" / "model" / "model.safetensors").is_file()
    assert "| bits/byte ↓ |" in report and "| arithmetic exact |" in report and "| pretrain | sft |" in report
    assert {p.name for p in (tmp_path / "qs" / "report-card").iterdir()} >= {"report.md", "report.png", "results.json"}


def test_vision_quickstart_end_to_end(tmp_path):
    """The vision job with the tiny-v model, few pictures and steps: every phase runs and the report has its parts."""
    from minimind.vision_quickstart import vision_quickstart

    quick = ["model=tiny-v", "max_steps=4", "log_every=1", "eval_every=0", "save_every=0", "eval_batches=1",
             "dtype=fp32", "batch_size=4"]
    report = vision_quickstart(tmp_path / "v", quick, pictures=48, held_out_pictures=24,
                               tower_overrides=quick).read_text()
    for heading in ("## Timings", "## Tower pretraining", "## Vision SFT", "## Held-out questions",
                    "## Held-out pictures"):
        assert heading in report
    assert "| colour |" in report and "| 16.7% |" in report       # a type with its chance level
    pictures = sorted(p.name for p in (tmp_path / "v" / "pictures").iterdir())
    assert pictures and all((tmp_path / "v" / "pictures" / p).stat().st_size > 100 for p in pictures)
    assert sum(p.endswith("-attention.png") for p in pictures) == len(pictures) // 2
    assert (tmp_path / "v" / "vision-sft" / "model" / "config.json").is_file()
