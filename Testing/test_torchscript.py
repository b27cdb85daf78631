"""TorchScript backbones: features from a scripted graph, the card's checksum, canonical axes, deepbet on a real MRI."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from SegUncertaintyLib.axis_order import AxisOrder
from SegUncertaintyLib.errors import ModelError
from SegUncertaintyLib.inference import predict_volume
from SegUncertaintyLib.io import write_volume
from SegUncertaintyLib.model.backbones import FeatureTaps, load_backbone
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.model.torchscript import ScriptGraph, TorchScriptBackbone, installed_file
from SegUncertaintyLib.volume import Geometry

from .helpers import rotation


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.ReLU())
        self.down = nn.Conv3d(4, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.out = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        skip = self.encode(x)
        return torch.softmax(self.out(self.up(torch.relu(self.down(skip))) + skip), dim=1)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """A scripted network as a user would hand it over: saved to a file and loaded back."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("script") / "tiny.pt"
    torch.jit.script(TinyNet().eval()).save(str(path))
    return torch.jit.load(str(path)).eval()


def test_the_walked_graph_equals_the_scripted_forward_and_gives_features(scripted):
    graph = ScriptGraph(scripted)
    assert graph.submodules == ["encode", "down", "up", "out"]
    x = torch.randn(1, 1, 12, 16, 8)
    with torch.no_grad():
        result, features = graph.run(x, ["encode", "up"])
        torch.testing.assert_close(result, scripted(x), rtol=0, atol=0)
        torch.testing.assert_close(features["encode"], scripted.encode(x), rtol=0, atol=0)
        assert features["up"].shape == (1, 4, 12, 16, 8)
    with pytest.raises(ModelError, match=r"feature tap\(s\) decoder not found .*encode, down, up, out"):
        graph.run(x, ["decoder"])


def test_the_backbone_gives_logits_and_hooked_features(scripted):
    backbone = TorchScriptBackbone(scripted, output="probabilities")
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad(), FeatureTaps(backbone, ["down"]) as taps:
        logits = backbone(x)
        torch.testing.assert_close(torch.softmax(logits, 1), scripted(x), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(taps.features["down"], scripted.down(scripted.encode(x)), rtol=0, atol=0)
    with pytest.raises(ModelError, match="feature tap"):
        FeatureTaps(backbone, ["nowhere"])


def test_control_flow_at_the_top_level_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 1)

        def forward(self, x):
            if x.mean() > 0:
                return self.conv(x)
            return self.conv(-x)

    with pytest.raises(ModelError, match="prim::If"):
        ScriptGraph(torch.jit.script(Branchy()))


def card_for(file_name: str, sha: str | None) -> dict:
    return {
        "format": "seguncertainty-model/1",
        "name": "tiny-script",
        "architecture": {"name": "TorchScript", "args": {"file": file_name, "output": "probabilities"}},
        "classes": ["background", "thing"],
        "in_channels": 1,
        "modality": "MR",
        "target_spacing_mm": [1.0, 1.0, 1.0],
        "patch_size": [16, 16, 16],
        "normalization": {"scheme": "zscore", "clip": None},
        "files": {file_name: sha} if sha else {},
    }


def test_a_torchscript_package_runs_only_the_file_its_card_vouches_for(scripted, tmp_path):
    folder = tmp_path / "package"
    folder.mkdir()
    scripted.save(str(folder / "net.pt"))
    sha = hashlib.sha256((folder / "net.pt").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(card_for("net.pt", sha)))
    package = load_package(folder)
    assert isinstance(load_backbone(package), TorchScriptBackbone)
    volume_geometry = Geometry((10, 12, 14), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    from SegUncertaintyLib.volume import Volume

    image = np.random.default_rng(0).normal(size=volume_geometry.shape).astype(np.float32)
    prediction = predict_volume(Volume(image, volume_geometry), package, device="cpu")
    assert prediction.probabilities.shape == (2, 10, 12, 14)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-5)

    (folder / "model.json").write_text(json.dumps(card_for("net.pt", "0" * 64)))
    with pytest.raises(ModelError, match="differs from the one the model card vouches for"):
        load_backbone(load_package(folder))
    (folder / "model.json").write_text(json.dumps(card_for("net.pt", None)))
    with pytest.raises(ModelError, match="no SHA-256"):
        load_backbone(load_package(folder))
    with pytest.raises(ModelError, match=r"write its card beside it as net\.json"):
        load_package(folder / "net.pt")

    # a network file the user chose, with its card beside it: the file itself is what runs
    chosen = tmp_path / "elsewhere" / "my-net.pt"
    chosen.parent.mkdir()
    scripted.save(str(chosen))
    chosen.with_suffix(".json").write_text(json.dumps(card_for("whatever.pt", None)))
    from SegUncertaintyLib.cli import main

    out = tmp_path / "out"
    source = tmp_path / "image.nrrd"
    from SegUncertaintyLib.io import write_volume

    write_volume(image, volume_geometry, source)
    assert main(["predict", "--input", str(source), "--output-dir", str(out), "--model", str(chosen),
                 "--device", "cpu", "--progress", "none"]) == 0  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["model"]["name"] == "tiny-script"
    with pytest.raises(ModelError, match="pip install no-such-distribution"):
        installed_file("no-such-distribution", "data/models/model.pt")


@pytest.mark.parametrize("turn", ["lps", "permuted", "oblique"])
def test_canonical_axes_match_nibabel(tmp_path, turn):
    nibabel = pytest.importorskip("nibabel")
    base = np.eye(3)
    if turn == "permuted":
        base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    elif turn == "oblique":
        base = rotation([0.3, -1.0, 0.4], 25.0) @ np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    geometry = Geometry((5, 6, 7), (0.9, 1.1, 2.0), (3.0, -4.0, 5.0), tuple(base.ravel()))
    array = np.arange(np.prod(geometry.shape), dtype=np.float32).reshape(geometry.shape)
    path = write_volume(array, geometry, tmp_path / "volume.nii.gz")
    expected = nibabel.as_closest_canonical(nibabel.load(str(path))).get_fdata(dtype=np.float32)
    order = AxisOrder.for_geometry(geometry, "RAS")
    ours = order.to_network(torch.from_numpy(array)).numpy()
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(order.from_network(torch.from_numpy(ours)).numpy(), array)
    assert order.network_shape(geometry.shape) == expected.shape
    assert order.array_shape(order.network_shape(geometry.shape)) == geometry.shape


@pytest.fixture(scope="module")
def deepbet():
    pytest.importorskip("nibabel")
    try:
        return load_package("deepbet"), load_backbone(load_package("deepbet"))
    except ModelError as exc:  # the deepbet wheel is a dev extra
        pytest.skip(str(exc))


def test_deepbet_extracts_the_brain_of_the_mni152_head(deepbet):
    from SegUncertaintyLib.data.mni import load_mni152

    package, network = deepbet
    mni = load_mni152(resolution=1)
    prediction = predict_volume(mni.t1, package, network=network, device="cpu")
    brain = prediction.labels == 1
    dice = 2 * (brain & mni.brain_mask).sum() / (brain.sum() + mni.brain_mask.sum())
    assert dice > 0.95  # 0.977 (deepbet's own pipeline, with its post-processing: 0.981)
    assert prediction.model_geometry.shape == (256, 256, 256)
    # the main network ran on the brain's box only: outside it, background with certainty
    outside = prediction.probabilities[0] == 1.0
    assert outside.mean() > 0.2 and not brain[outside].any()
    assert not mni.brain_mask[outside].any()

    # the same head stored with its axes swapped and reversed gives the same brain
    array = np.ascontiguousarray(np.flip(mni.t1.array.transpose(1, 0, 2), axis=2))
    g = mni.t1.geometry
    direction = g.direction_matrix[:, [0, 2, 1]] * np.array([-1.0, 1.0, 1.0])  # i reversed; j and k swapped
    last_i = g.ijk_to_physical(np.array([g.shape[2] - 1.0, 0.0, 0.0]))
    swapped = Geometry(
        (g.shape[1], g.shape[0], g.shape[2]),
        (g.spacing[0], g.spacing[2], g.spacing[1]),
        tuple(last_i),
        tuple(direction.ravel()),
    )
    from SegUncertaintyLib.volume import Volume

    moved = predict_volume(Volume(array, swapped), package, network=network, device="cpu")
    back = np.flip(moved.labels, axis=2).transpose(1, 0, 2)
    assert (back != prediction.labels).mean() < 1e-3


def test_deepbet_on_the_bundled_itk_head(deepbet):
    from SegUncertaintyLib.io import read_volume
    from SegUncertaintyLib.resources import sample_path

    package, network = deepbet
    head = read_volume(sample_path("itk-t1-head.nii.gz"))  # 2 x 2 x 3 mm, oblique-free but not RAS-stored
    brain = read_volume(sample_path("itk-t1-head-brain.nii.gz")).array > 0
    prediction = predict_volume(head, package, network=network, device="cpu")
    found = prediction.labels == 1
    assert 2 * (found & brain).sum() / (found.sum() + brain.sum()) > 0.95  # 0.965 (deepbet's own: 0.966)


def test_the_models_command_lists_the_packages(capsys, tmp_path):
    from SegUncertaintyLib.cli import main

    folder = tmp_path / "needs-a-wheel"
    shutil.copytree(load_package("deepbet").path, folder)
    card = json.loads((folder / "model.json").read_text())
    card["name"] = "needs-a-wheel"
    card["architecture"]["args"]["distribution"] = "no-such-distribution"
    (folder / "model.json").write_text(json.dumps(card))
    assert main(["models", str(folder), "--json", "--progress", "none"]) == 0
    summaries = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert summaries["lidc-nodule"]["ready"] and "fragility" in summaries["lidc-nodule"]["methods"]
    assert {"segwithu", "ensemble", "mc-dropout"} <= set(summaries["lidc-nodule"]["methods"])
    assert "deepbet" in summaries and summaries["deepbet"]["modality"] == "MR"
    assert "segwithu" in summaries["deepbet"]["methods"]  # the bundled head trained with --data brains
    assert not summaries["needs-a-wheel"]["ready"]
    assert "pip install no-such-distribution" in summaries["needs-a-wheel"]["problem"]


def test_train_head_refuses_a_data_set_of_other_classes(capsys):
    from .helpers import run_quietly

    assert run_quietly("train-head", "--model", "deepbet", "--max-epochs", "1") == 1
    assert "segments brain (MR) but data set 'lidc' labels nodule (CT)" in capsys.readouterr().err
