from __future__ import annotations

import pytest

from pipeline.config import Config, config_to_dict, load_config, save_config, with_changes
from pipeline.errors import ConfigError, PipelineError


def write(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_empty_file_gives_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg == Config()
    assert cfg.train.epochs == 10 and cfg.model.name == "resnet18"


def test_values_are_read_and_typed(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            "model: {name: resnet10, small_input: true}\n"
            "transforms: {spatial_dims: 2, size: [28, 28], windows: [ct-lung, ct-bone]}\n"
            "train: {lr: 3e-4, epochs: 4}\n",
        )
    )
    assert cfg.model.name == "resnet10" and cfg.model.small_input is True
    assert cfg.transforms.size == (28, 28)
    assert cfg.transforms.windows == ("ct-lung", "ct-bone")
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.epochs == 4


def test_unknown_key_names_key_and_suggests(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "train: {epoch: 3}\n"))
    msg = str(e.value)
    assert "train.epoch" in msg and "Did you mean 'epochs'" in msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, PipelineError)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'trian'.*Did you mean 'train'"):
        load_config(write(tmp_path, "trian: {epochs: 3}\n"))


def test_bad_choice_lists_allowed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "train: {optimizer: adamm}\n"))
    msg = str(e.value)
    assert "'adamm'" in msg and "adamw, adam, sgd" in msg and "Did you mean 'adam" in msg


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train: {epochs: many}\n", "train.epochs': expected int, found 'many'"),
        ("train: {epochs: 0}\n", "outside [1, inf]"),
        ("train: {lr: -1}\n", "train.lr"),
        ("model: {small_input: maybe}\n", "expected bool"),
        ("transforms: {spatial_dims: 4}\n", "allowed: 2, 3"),
        ("transforms: {spatial_dims: 2, size: [64, 64, 32]}\n", "has 3 values but transforms.spatial_dims is 2"),
        ("transforms: {slice_mode: slab, slab: 4}\n", "odd number"),
        ("data: {label_columns: [a, b]}\n", "set data.task: multilabel"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_values(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert fragment in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: {epochs: [\n"))


def test_overrides_convert_types():
    cfg = load_config(
        None,
        overrides=[
            "train.epochs=3",
            "train.lr=0.01",
            "train.amp=false",
            "transforms.spatial_dims=2",
            "transforms.size=32,32",
            "model.pretrained=run:/tmp/x",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.train.amp is False
    assert cfg.transforms.size == (32, 32)
    assert cfg.model.pretrained == "run:/tmp/x"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochz=3", "unknown config key 'train.epochz'"),
        ("trainn.epochs=3", "unknown section 'trainn'"),
        ("epochs=3", "one dot"),
        ("train.epochs", "expected section.key=value"),
    ],
)
def test_bad_overrides(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("'", "'")):
        load_config(None, overrides=[override])


def test_round_trip(tmp_path):
    cfg = load_config(None, overrides=["transforms.spacing=[1.5, 1.5, 3.0]", "eval.cohorts=[site, sex]"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert config_to_dict(again)["eval"]["cohorts"] == ["site", "sex"]


def test_with_changes_validates():
    cfg = with_changes(Config(), train={"epochs": 2})
    assert cfg.train.epochs == 2
    with pytest.raises(ConfigError):
        with_changes(Config(), train={"epochs": -2})


@pytest.mark.parametrize("override, fragment", [
    ("train.lr=.nan", "'train.lr': expected a finite number, found nan"),
    ("train.lr=.inf", "'train.lr': expected a finite number, found inf"),
    ("train.weight_decay=-.inf", "'train.weight_decay': expected a finite number"),
    ("transforms.window=[40, .nan]", "'transforms.window': expected a finite number"),
    ("transforms.size=[0, 16, 16]", "'transforms.size': every size must be at least 1 voxel, found [0, 16, 16]"),
    ("transforms.size=[-8, 16, 16]", "'transforms.size': every size must be at least 1 voxel"),
    ("transforms.spacing=[0, 1, 1]", "'transforms.spacing': every spacing must be above 0 mm"),
])
def test_non_finite_numbers_and_empty_sizes_are_refused(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert fragment in str(info.value)


@pytest.mark.parametrize("override", ["train.lr=.nan", "train.lr=.inf", "transforms.size=[0,16]"])
def test_train_refuses_non_finite_and_empty_sizes_before_any_work(tmp_path, capsys, override):
    from pipeline.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("transforms: {spatial_dims: 2, size: [16, 16]}\n")
    run = tmp_path / "run"
    code = main(["train", "--config", str(cfg), "--manifest", str(tmp_path / "m.csv"), "--out", str(run),
                 "--set", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and override.split("=")[0] in err[0]
    assert not run.exists()
