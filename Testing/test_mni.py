"""The MNI152 template from the nilearn wheel: real T1 with soft tissue labels."""

from pathlib import Path

import numpy as np
import pytest

from SegUncertaintyLib.io import read_volume

pytest.importorskip("nilearn")

from SegUncertaintyLib.data.mni import CLASSES, load_mni152


def test_mni152_1mm_matches_the_file_read_by_simpleitk():
    import nilearn

    template = load_mni152(resolution=1)
    path = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    reference = read_volume(path)
    # our RAS-affine -> LPS geometry conversion agrees with SimpleITK's reading of the same file
    assert template.t1.geometry.is_close(reference.geometry, atol=1e-5)
    assert np.corrcoef(template.t1.array.ravel(), reference.array.ravel())[0, 1] > 0.999


def test_mni152_2mm_probabilities_are_a_distribution():
    template = load_mni152(resolution=2)
    assert template.t1.array.shape == (95, 117, 99)
    assert template.t1.geometry.spacing == (2.0, 2.0, 2.0)
    assert template.probabilities.shape == (len(CLASSES), 95, 117, 99)
    np.testing.assert_allclose(template.probabilities.sum(0), 1.0, atol=1e-5)
    counts = np.bincount(template.labels.ravel(), minlength=4)
    assert (counts > 1000).all()  # every tissue class is present
    assert counts[3] > counts[1] and counts[2] > counts[1]  # more GM and WM than CSF
    # white matter is brighter than grey matter on T1
    t1 = template.t1.array
    assert t1[template.labels == 3].mean() > t1[template.labels == 2].mean()
