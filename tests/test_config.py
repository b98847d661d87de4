"""Settings declared once: the CLI options and the benchmark's reuse key come from the declarations."""
from dataclasses import dataclass, fields

import pytest

from napari_dmd import cli, config
from napari_dmd.config import TrainConfig, declared_settings, flag_of, label_of, model_settings, setting
from napari_dmd.errors import DataError


def train_options(parser) -> dict:
    sub = next(a for a in parser._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices["train"]._actions}


def test_every_declared_setting_is_a_train_option_with_its_default():
    options = train_options(cli.build_parser())
    declared = declared_settings()
    from_data = {"num_classes", "class_names", "channels", "spacing"}
    assert {f.name for f in declared} == {f.name for f in fields(TrainConfig)} - from_data
    for f in declared:
        action = options[f.name]
        assert action.default == f.default and flag_of(f) in action.option_strings
        assert f.metadata["help"] in action.help
    assert options["lambda_distill"].option_strings == ["--lambda"]
    assert options["patch_size"].option_strings == ["--patch"]
    assert options["precision"].choices == ("auto", "fp32", "bf16", "fp16")
    args = cli.build_parser().parse_args(["train", "--images", "i", "--labels", "l", "--out", "o", "--lambda", "2",
                                          "--patch", "16", "32", "16", "--lr", "0.5"])
    assert args.lambda_distill == 2.0 and args.patch_size == [16, 32, 16] and args.lr == 0.5
    assert args.given == {"lambda_distill", "patch_size", "lr"}  # what the command line gave explicitly


def test_a_new_declared_setting_appears_without_other_edits(monkeypatch):
    @dataclass
    class Extended(TrainConfig):
        dropout: float = setting(0.5, "dropout rate of the networks", minimum=0.0, maximum=1.0)

    monkeypatch.setattr(config, "TrainConfig", Extended)
    monkeypatch.setattr(cli.parser, "TrainConfig", Extended)
    options = train_options(cli.build_parser())
    assert options["dropout"].default == 0.5 and options["dropout"].option_strings == ["--dropout"]
    args = cli.build_parser().parse_args(["train", "--images", "i", "--labels", "l", "--out", "o", "--dropout", "0.2"])
    assert args.dropout == 0.2
    assert model_settings(Extended(dropout=0.2))["dropout"] == 0.2
    with pytest.raises(DataError, match="dropout must be between 0.0 and 1.0"):
        Extended(dropout=2.0)


def test_levels_labels_and_the_reuse_key():
    assert [f.name for f in declared_settings("basic")] == ["iterations"]
    assert len(declared_settings("advanced")) == len(declared_settings()) - 1
    by_name = {f.name: f for f in declared_settings()}
    assert label_of(by_name["lambda_distill"]) == "λ (distillation weight)" and label_of(by_name["seed"]) == "seed"
    key = model_settings(TrainConfig())
    assert {"device", "precision", "checkpoint_every", "num_classes"}.isdisjoint(key)
    assert key["lambda_distill"] == 4.0 and key["patch_size"] is None and "momentum" in key
    assert model_settings(TrainConfig(device="cpu", checkpoint_every=7)) == key
    assert model_settings(TrainConfig(seed=3)) != key
    with pytest.raises(ValueError, match="level"):
        setting(1, "x", level="expert")


@pytest.mark.parametrize("bad, words", [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"temperature": float("inf")}, "temperature must be a finite number"),
    ({"patch_size": (1, 1, 1)}, "at least 16 voxels"),
    ({"labeled_batch": 0}, "labeled_batch must be at least 1"),
    ({"foreground_fraction": 1.5}, "foreground_fraction must be between"),
    ({"lr_gamma": 0.0}, "lr_gamma must be positive"),
    ({"momentum": 1.0}, "momentum must be below 1"),
    ({"precision": "fp64"}, "precision 'fp64' is not one of"),
])
def test_settings_out_of_range_are_refused(bad, words):
    with pytest.raises(DataError, match=words):
        TrainConfig(**bad)
