"""Never silently wrong on the model's side: NaN outputs are errors; every file the card names is the file used."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.model.backbones import sha256_of
from SegUncertaintyLib.model.package import CARD_NAME
from SegUncertaintyLib.resources import bundled_models, sample_path

from .helpers import predict_args

DEMO = sample_path("lidc-nodule-demo.nrrd")


def run(capsys, *args):
    status = main([*args])
    return status, capsys.readouterr().err


def copy_package(tmp_path):
    """A copy of lidc-nodule with the files its card names (not its ensemble members)."""
    source = bundled_models()["lidc-nodule"]
    target = tmp_path / "package"
    target.mkdir()
    card = json.loads((source / CARD_NAME).read_text())
    for name in [CARD_NAME, *card["files"]]:
        shutil.copy(source / name, target / name)
    return target, card


def write_card(folder, card):
    (folder / CARD_NAME).write_text(json.dumps(card, indent=2))


def refuse_nan(text):
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"summary.json holds {token}"))


def test_weights_that_give_nan_are_an_error_naming_the_file(capsys, tmp_path):
    package, card = copy_package(tmp_path)
    weights = load_file(str(package / "backbone.safetensors"))
    name = next(k for k, v in weights.items() if v.dtype == torch.float32 and v.ndim == 5)
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(package / "backbone.safetensors"))
    card["files"]["backbone.safetensors"] = sha256_of(package / "backbone.safetensors")  # vouched for: still NaN
    write_card(package, card)
    out = tmp_path / "out"
    status, err = run(capsys, *predict_args(DEMO, out, "--model", str(package), progress="none"))
    assert status == 1
    (line,) = [line for line in err.splitlines() if line]
    assert line.startswith("error: model 'lidc-nodule' produced") and "NaN or infinite" in line
    assert str(package / "backbone.safetensors") in line and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_the_head_file_the_card_names_is_the_one_used(capsys, tmp_path):
    package, card = copy_package(tmp_path)
    (package / "head.safetensors").rename(package / "my_head.safetensors")
    card["files"]["my_head.safetensors"] = card["files"].pop("head.safetensors")
    card["head"]["file"] = "my_head.safetensors"
    write_card(package, card)
    out = tmp_path / "out"
    status, _ = run(capsys, *predict_args(DEMO, out, "--model", str(package), progress="none"))
    assert status == 0
    summary = refuse_nan((out / "summary.json").read_text())  # strict JSON
    assert summary["uncertainty"] == "segwithu" and "ranking" in summary["outputs"]["maps"]
    assert "quality" in summary


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p, c: (p / "head.safetensors").unlink(), "head.safetensors is missing"),
        (lambda p, c: c["head"].update(file="other.safetensors"), "other.safetensors is missing"),
        (lambda p, c: (p / "replay.safetensors").unlink(), "replay.safetensors is missing"),
    ],
)
def test_a_file_the_card_names_that_is_missing_stops_before_any_work(capsys, tmp_path, damage, message):
    package, card = copy_package(tmp_path)
    damage(package, card)
    write_card(package, card)
    out = tmp_path / "out"
    status, err = run(capsys, *predict_args(DEMO, out, "--model", str(package), progress="none"))
    assert status == 1 and message in err and "Traceback" not in err
    assert not out.exists()  # refused before the output folder was made
