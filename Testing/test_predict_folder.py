"""The one writer and reader of a predict output folder: what predict writes is what every reader reads."""

import json

import numpy as np
import pytest

from SegUncertaintyLib.errors import InputError
from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.pipeline import predict_to_files
from SegUncertaintyLib.predict_folder import PredictFolder, PredictSummary
from SegUncertaintyLib.resources import sample_path

DEMO = sample_path("lidc-nodule-demo.nrrd")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return predict_to_files(DEMO, out, device="cpu", fragility=FragilityConfig(radii_mm=(1.0,), steps=4))


def test_the_summary_read_back_is_the_summary_written(written):
    text = (written.directory / "summary.json").read_text()
    read = PredictFolder.read(written.directory)
    assert read.summary == written.summary
    assert read.summary.to_dict() == json.loads(text)  # nothing is lost or added on the way
    summary = read.summary
    assert summary.quality is not None and summary.fragility is not None and summary.uncertainty == "segwithu"
    assert summary.outputs.shown_probabilities == summary.outputs.calibrated_probabilities
    assert summary.total_volume_ml == pytest.approx(summary.classes[0].volume_ml)


def test_the_folder_gives_the_files_predict_wrote(written):
    folder = PredictFolder.read(written.directory)
    name, risk = folder.risk()
    error_probability = read_volume(written.directory / "error_probability.nrrd").array
    assert name == "error_probability" and np.array_equal(risk, error_probability)
    fragile = folder.fragile()
    assert fragile.dtype == bool and fragile.sum() == written.summary.fragility.fragile_voxels
    regions = folder.regions()
    stored = json.loads((written.directory / "regions.json").read_text())["regions"]
    assert [json.loads(json.dumps(r.to_dict())) for r in regions] == stored


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda s: s["quality"].update(needs_review="no"), "quality.needs_review"),
        (lambda s: s["classes"][0].update(volume_interval_ml=[1.0]), "classes[].volume_interval_ml"),
        (lambda s: s["applicability"].update(reasons="none"), "applicability.reasons"),
        (lambda s: s["fragility"].pop("fragile_voxels"), "fragility.fragile_voxels"),
        (lambda s: s["outputs"]["maps"].update(ranking=3), "outputs.maps"),
        (lambda s: s["model"].update(classes=["background"]), "model.classes"),
        (
            lambda s: s["quality"]["volume_forecast_ml"].update(interval_90=[1.0, "2"]),
            "quality.volume_forecast_ml.interval_90",
        ),
    ],
)
def test_a_damaged_field_is_named(written, tmp_path, damage, field):
    summary = json.loads((written.directory / "summary.json").read_text())
    damage(summary)
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match=f"\\({field.replace('[', '.').replace(']', '.')} missing or not valid\\)"):
        PredictFolder.read(tmp_path)
    with pytest.raises(KeyError):
        PredictSummary.from_dict(summary)


def test_a_listed_file_that_is_gone_is_named(written, tmp_path):
    summary = json.loads((written.directory / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    folder = PredictFolder.read(tmp_path)
    with pytest.raises(InputError, match=r"segmentation\.nrrd is listed in summary\.json but missing"):
        folder.read_volume(folder.summary.outputs.segmentation)
    with pytest.raises(InputError, match="not a plain file name"):
        folder.path("../segmentation.nrrd")
