"""Models found where they are installed: a real nnU-Net v2 folder (made by nnunetv2) laid out as
nnU-Net and TotalSegmentator keep theirs, and MONAI bundles; ``--model`` takes them by name."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.model.catalog import installed_problem
from SegUncertaintyLib.model.discovery import discover, find, monai_bundles, totalsegmentator_weights
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.resources import sample_path

TINY = Path(__file__).parent / "data" / "nnunet-lidc-tiny" / "Dataset901_LIDCNodule"
TRAINED = "nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres"


def _results(root: Path, dataset: str = "Dataset901_LIDCNodule", trained: str = TRAINED) -> Path:
    """An nnU-Net results folder holding the real tiny model as ``dataset/trained``."""
    shutil.copytree(TINY / TRAINED, root / dataset / trained)
    return root


def test_the_folders_each_tool_keeps_its_models_in(tmp_path):
    home = tmp_path / "home"
    assert totalsegmentator_weights({}, home) == home / ".totalsegmentator" / "nnunet" / "results"
    assert totalsegmentator_weights({"TOTALSEG_HOME_DIR": "/opt/ts"}, home) == Path("/opt/ts/nnunet/results")
    both = {"TOTALSEG_HOME_DIR": "/opt/ts", "TOTALSEG_WEIGHTS_PATH": "/w"}
    assert totalsegmentator_weights(both, home) == Path("/w")  # the weights path wins, as TotalSegmentator reads it
    assert monai_bundles({}, home) == home / ".cache" / "torch" / "hub" / "bundle"
    assert monai_bundles({"XDG_CACHE_HOME": "/c"}, home) == Path("/c/torch/hub/bundle")
    assert monai_bundles({"TORCH_HOME": "/t", "XDG_CACHE_HOME": "/c"}, home) == Path("/t/hub/bundle")
    assert discover({}, home) == []  # nothing installed, no variable set: nothing found, no error


def test_an_nnunet_results_folder_is_found_and_taken_by_name(tmp_path):
    results = _results(tmp_path / "results")
    environ = {"nnUNet_results": str(results)}
    (found,) = discover(environ, tmp_path / "home")
    assert found.name == f"nnunet:Dataset901_LIDCNodule/{TRAINED}" and found.aliases == (
        "nnunet:Dataset901_LIDCNodule",
    )
    assert installed_problem(found) is None
    assert find("nnunet:Dataset901_LIDCNodule", environ, tmp_path / "home") == found.path
    # a second trained model of the same dataset: only the full names are unambiguous
    _results(results, trained="nnUNetTrainer__nnUNetPlans__3d_lowres")
    names = [m.name for m in discover(environ, tmp_path / "home")]
    expected = sorted(f"nnunet:Dataset901_LIDCNodule/{t}" for t in ("nnUNetTrainer__nnUNetPlans__3d_lowres", TRAINED))
    assert names == expected
    with pytest.raises(ModelError, match=r"no installed model 'nnunet:Dataset901_LIDCNodule' .*3d_lowres"):
        find("nnunet:Dataset901_LIDCNodule", environ, tmp_path / "home")
    # the lowres copy names a configuration its plans do not have: said when asked, not when listed
    lowres = next(m for m in discover(environ, tmp_path / "home") if "lowres" in m.name)
    assert installed_problem(lowres) is None or "configuration" in installed_problem(lowres)


def test_predict_takes_an_installed_model_by_name_as_it_takes_its_folder(tmp_path, monkeypatch):
    results = _results(tmp_path / "results")
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    demo = str(sample_path("lidc-nodule-demo.nrrd"))
    by_name, by_folder = tmp_path / "by-name", tmp_path / "by-folder"
    common = ["--uncertainty", "msp", "--device", "cpu", "--progress", "none"]
    assert main(["predict", "--input", demo, "--output-dir", str(by_name), "--model", "nnunet:Dataset901_LIDCNodule",
                 *common]) == 0  # fmt: skip
    folder = str(results / "Dataset901_LIDCNodule" / TRAINED)
    assert main(["predict", "--input", demo, "--output-dir", str(by_folder), "--model", folder, *common]) == 0
    from SegUncertaintyLib.io import read_volume

    np.testing.assert_array_equal(
        read_volume(by_name / "segmentation.nrrd").array, read_volume(by_folder / "segmentation.nrrd").array
    )
    assert load_package("nnunet:Dataset901_LIDCNodule").card.name == load_package(folder).card.name


def test_totalsegmentator_s_networks_are_found_under_its_home_and_run_as_it_runs_them(tmp_path, monkeypatch):
    home = tmp_path / "home"
    weights = home / ".totalsegmentator" / "nnunet" / "results"
    _results(
        weights,
        "Dataset297_TotalSegmentator_total_3mm_1559subj",
        "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres",
    )
    _results(
        weights,
        "Dataset117_lung_airways_arteries_veins_282subj",
        "nnUNetTrainerSkeletonRecall__nnUNetPlans__3d_fullres",
    )
    vessels, fast = discover({}, home)  # in the order of their folders
    assert fast.source == "totalsegmentator" and fast.path.parent.parent == weights
    assert fast.aliases == (
        "totalsegmentator:Dataset297_TotalSegmentator_total_3mm_1559subj",
        "totalsegmentator:total_fast",
    )
    assert fast.problem is None and installed_problem(fast) is None
    # a network TotalSegmentator runs on a crop another network finds: listed, and refused by name or by path
    assert "cropped to the five lung lobes found by total_fast (3 mm), plus 20 mm" in vessels.problem
    with pytest.raises(ModelError, match="does not make that crop"):
        find("totalsegmentator:lung_vessels", {}, home)
    with pytest.raises(ModelError, match="does not make that crop"):
        load_package(vessels.path)
    # a task of several networks merged: each part runs alone, the task does not
    merged = r"task total is 5 networks .*Dataset291_\w+, .*\) or totalsegmentator:total_fast, one network"
    with pytest.raises(ModelError, match=merged):
        find("totalsegmentator:total", {}, home)

    monkeypatch.setenv("HOME", str(home))
    card = load_package("totalsegmentator:total_fast").card
    assert card.inference.frame == "RAS" and card.inference.overlap == pytest.approx(0.2)  # its step is 0.8
    assert "TotalSegmentator's total_fast" in card.description
    assert (
        load_package(str(_results(tmp_path / "mine") / "Dataset901_LIDCNodule" / TRAINED)).card.inference.frame
        == "voxel"
    )


def test_the_canonical_frame_is_nibabel_s_closest_canonical_and_does_not_depend_on_storage(tmp_path):
    import nibabel
    import SimpleITK as sitk

    from SegUncertaintyLib.io import read_volume, write_volume
    from SegUncertaintyLib.network_grid import canonical_order
    from SegUncertaintyLib.volume import Volume

    from .helpers import rotation

    demo = read_volume(sample_path("lidc-nodule-demo.nrrd"))
    # the same image stored with permuted and reversed axes, a little oblique
    array = np.flip(demo.array.transpose(2, 0, 1), axis=1).copy()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.0, 1.2))
    image.SetDirection(tuple((rotation(np.array([1.0, 2.0, 3.0]), 9.0) @ np.diag([1.0, -1.0, -1.0])).ravel()))
    path = tmp_path / "stored.nii.gz"
    sitk.WriteImage(image, str(path))
    volume = read_volume(path)
    ours = canonical_order(volume.geometry).to_network(volume.array)
    canonical = nibabel.as_closest_canonical(nibabel.load(path)).get_fdata()
    np.testing.assert_array_equal(ours, canonical.transpose(2, 1, 0))  # nibabel (i, j, k) -> ITK (k, j, i)
    # stored as that canonical array itself: nothing left to permute or flip
    write_volume(ours, canonical_order(volume.geometry).geometry(volume.geometry), tmp_path / "canonical.nii.gz")
    again = read_volume(tmp_path / "canonical.nii.gz")
    assert canonical_order(again.geometry) == canonical_order(Volume(ours, again.geometry).geometry)
    assert canonical_order(again.geometry).permutation == (0, 1, 2) and not any(canonical_order(again.geometry).flips)


def test_a_monai_bundle_is_listed_and_refused_with_what_it_lacks(tmp_path, bundled_package):
    home = tmp_path / "home"
    bundle = monai_bundles({}, home) / "spleen_ct_segmentation"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.5.0"}))
    (found,) = discover({}, home)
    assert found.name == "monai:spleen_ct_segmentation" and "TorchScript" in found.problem
    with pytest.raises(ModelError, match="monai:spleen_ct_segmentation: a MONAI bundle's network is built by MONAI"):
        find("monai:spleen_ct_segmentation", {}, home)
    # with a card beside it (e.g. for its exported TorchScript network) it is a model package like any other
    for item in bundled_package.path.iterdir():
        if item.is_file():
            shutil.copy(item, bundle / item.name)
    assert find("monai:spleen_ct_segmentation", {}, home) == bundle


def test_models_discover_lists_them_and_an_unknown_name_lists_what_there_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_results", str(_results(tmp_path / "results")))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["models", "--discover", "--json", "--progress", "none"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == f"nnunet:Dataset901_LIDCNodule/{TRAINED}" and row["problem"] is None
    demo = str(sample_path("lidc-nodule-demo.nrrd"))
    code = main(["predict", "--input", demo, "--output-dir", str(tmp_path / "out"), "--model", "nnunet:Dataset999_X"])
    assert code == 1 and f"found for nnunet: nnunet:Dataset901_LIDCNodule/{TRAINED}" in capsys.readouterr().err


def test_naming_an_installed_model_imports_no_torch(tmp_path):
    results = _results(tmp_path / "results")
    code = (
        "import sys; from SegUncertaintyLib import preflight; "
        "preflight.check_model('nnunet:Dataset901_LIDCNodule'); print('torch' in sys.modules)"
    )
    env = {"nnUNet_results": str(results), "HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout == "False\n"


def test_a_totalsegmentator_network_gives_one_answer_however_the_image_is_stored(tmp_path, monkeypatch):
    import SimpleITK as sitk

    from SegUncertaintyLib.io import read_volume
    from SegUncertaintyLib.network_grid import canonical_order

    home = tmp_path / "home"
    weights = home / ".totalsegmentator" / "nnunet" / "results"
    _results(weights, "Dataset298_TotalSegmentator_total_6mm_1559subj", "nnUNetTrainer__nnUNetPlans__3d_fullres")
    monkeypatch.setenv("HOME", str(home))
    demo = sample_path("lidc-nodule-demo.nrrd")
    image = sitk.ReadImage(str(demo))
    stored = sitk.PermuteAxes(sitk.Flip(image, [True, False, True]), [2, 0, 1])  # the same voxels, other axes
    sitk.WriteImage(stored, str(tmp_path / "stored.nii.gz"))
    segmentations = []
    for source, out in ((demo, tmp_path / "a"), (tmp_path / "stored.nii.gz", tmp_path / "b")):
        args = [
            "predict",
            "--input",
            str(source),
            "--output-dir",
            str(out),
            "--model",
            "totalsegmentator:total_fastest",
        ]
        assert main([*args, "--uncertainty", "msp", "--device", "cpu", "--progress", "none"]) == 0
        written = read_volume(next(out.glob("segmentation.*")), allow_constant=True)
        segmentations.append(canonical_order(written.geometry).to_network(written.array))
    assert segmentations[0].any()
    np.testing.assert_array_equal(segmentations[0], segmentations[1])
