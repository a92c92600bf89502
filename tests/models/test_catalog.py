from __future__ import annotations

import json

from pipeline.cli import main


def test_models_command_prints_the_registry_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "dims", "weight", "sources", "notes"]
    resnet18 = next(line for line in lines if line.startswith("resnet18 "))
    assert "2D/3D" in resnet18 and "torchvision, medicalnet, bundle, run, file" in resnet18
    for name in ("resnet10", "resnet50", "densenet121", "seresnet50", "efficientnet-b4", "vit-b16"):
        assert any(line.startswith(name + " ") for line in lines), name
    assert "weights cache" in out


def test_models_command_json(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RADPIPE_WEIGHTS_DIR", str(tmp_path))
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["densenet121"]["dims"] == [2, 3]
    assert rows["resnet10"]["sources"] == ["medicalnet", "bundle", "run", "file"]
