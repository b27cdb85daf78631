"""TotalSegmentator's networks as it runs them: which tasks are one network, which are several merged,
which crop the input first. Plain Python: facts read from TotalSegmentator 2.18's source
(``map_tasks_config.py``, ``python_api.py``, ``nnunet.py``).

Each network is an nnU-Net v2 trained-model folder under its weights folder (see :mod:`.discovery`).
TotalSegmentator runs it on the image reoriented to nibabel's closest canonical (RAS) axes and
resampled to the network's spacing, without test-time mirroring: the card of such a folder says
``inference.frame`` ``"RAS"`` (:mod:`..network_grid`), and our resampling goes straight to the
plans' spacing (trilinear on the logits; TotalSegmentator: linear zoom of the image, then nnU-Net's
own preprocessing). What the engine does not do is refused, never skipped:

* tasks of several networks whose label maps it merges (``total``: five parts): each part is a
  network of its own and runs alone under its dataset's name;
* tasks whose network sees only a box cropped around structures another network found first
  (``lung_vessels``: the lung lobes, found by the 3 mm ``total`` network, plus 20 mm).
"""

from __future__ import annotations

# task -> the dataset folders of its networks, in TotalSegmentator's order (several: merged parts)
TASK_DATASETS: dict[str, tuple[str, ...]] = {
    "total": (
        "Dataset291_TotalSegmentator_part1_organs_1559subj",
        "Dataset292_TotalSegmentator_part2_vertebrae_1532subj",
        "Dataset293_TotalSegmentator_part3_cardiac_1559subj",
        "Dataset294_TotalSegmentator_part4_muscles_1559subj",
        "Dataset295_TotalSegmentator_part5_ribs_1559subj",
    ),
    "total_fast": ("Dataset297_TotalSegmentator_total_3mm_1559subj",),
    "total_fastest": ("Dataset298_TotalSegmentator_total_6mm_1559subj",),
    "total_v3": (
        "Dataset831_TotalSegmentator_part1_organs_1830subj",
        "Dataset832_TotalSegmentator_part2_vertebrae_1559subj",
        "Dataset833_TotalSegmentator_part3_cardiac_1830subj",
        "Dataset834_TotalSegmentator_part4_muscles_1830subj",
        "Dataset835_TotalSegmentator_part5_ribs_1559subj",
    ),
    "total_v3_fast": ("Dataset836_TotalSegmentator_total_3mm_1559subj",),
    "total_v3_fastest": ("Dataset837_TotalSegmentator_total_6mm_1559subj",),
    "total_mr": ("Dataset850_TotalSegMRI_part1_organs_1088subj", "Dataset851_TotalSegMRI_part2_muscles_1088subj"),
    "total_mr_fast": ("Dataset852_TotalSegMRI_total_3mm_1088subj",),
    "total_mr_fastest": ("Dataset853_TotalSegMRI_total_6mm_1088subj",),
    "body": ("Dataset299_body_1559subj",),
    "body_fast": ("Dataset300_body_6mm_1559subj",),
    "body_mr": ("Dataset597_mri_body_139subj",),
    "body_mr_fast": ("Dataset598_mri_body_6mm_139subj",),
    "vertebrae_mr": ("Dataset756_mri_vertebrae_1076subj",),
    "breasts": ("Dataset527_breasts_1559subj",),
    "trunk_cavities": ("Dataset343_mediastinum_1786subj",),
    "lung_vessels": ("Dataset117_lung_airways_arteries_veins_282subj",),
    "cerebral_bleed": ("Dataset150_icb_v0",),
    "hip_implant": ("Dataset260_hip_implant_71subj",),
    "pleural_pericard_effusion": ("Dataset315_thoraxCT",),
    "liver_vessels": ("Dataset008_HepaticVessel",),
    "head_glands_cavities": ("Dataset775_head_glands_cavities_492subj",),
    "headneck_bones_vessels": ("Dataset776_headneck_bones_vessels_492subj",),
    "head_muscles": ("Dataset777_head_muscles_492subj",),
    "headneck_muscles": (
        "Dataset778_headneck_muscles_part1_492subj",
        "Dataset779_headneck_muscles_part2_492subj",
    ),
    "oculomotor_muscles": ("Dataset351_oculomotor_muscles_18subj",),
    "lung_nodules": ("Dataset913_lung_nodules",),
    "kidney_cysts": ("Dataset789_kidney_cyst_501subj",),
    "ventricle_parts": ("Dataset552_ventricle_parts_38subj",),
    "liver_segments": ("Dataset570_ct_liver_segments",),
    "liver_segments_mr": ("Dataset576_mri_liver_segments_120subj",),
    "liver_lesions": ("Dataset591_ct_liver_lesions_842subj",),
    "liver_lesions_mr": ("Dataset589_ct_mri_liver_lesions_750subj",),
    "craniofacial_structures": ("Dataset115_mandible",),
    "abdominal_muscles": ("Dataset952_abdominal_muscles_167subj",),
    "teeth": ("Dataset113_ToothFairy3",),
}

_LOBES = "the five lung lobes"
# task -> what TotalSegmentator crops its input to, and which network finds it
CROPS: dict[str, str] = {
    "lung_vessels": f"{_LOBES} found by total_fast (3 mm), plus 20 mm",
    "cerebral_bleed": "the brain found by total_fastest (6 mm), plus 20 mm",
    "hip_implant": "both femurs and hips found by total_fastest (6 mm), plus 20 mm",
    "pleural_pericard_effusion": f"{_LOBES} found by total_fastest (6 mm), plus 20 mm",
    "liver_vessels": "the liver found by total_fastest (6 mm), plus 20 mm",
    "head_glands_cavities": "the skull found by total_fastest (6 mm), plus 20 mm",
    "headneck_bones_vessels": "the clavicles and the C1, C5, T1 and T4 vertebrae found by total_fastest, plus 20 mm",
    "head_muscles": "the skull found by total_fastest (6 mm), plus 20 mm",
    "headneck_muscles": "the clavicles and the C1, C5, T1 and T4 vertebrae found by total_fastest, plus 20 mm",
    "oculomotor_muscles": "the skull found by total_fastest (6 mm), plus 20 mm",
    "lung_nodules": f"{_LOBES} found by total_fastest (6 mm), plus 20 mm",
    "kidney_cysts": "the kidneys, liver, spleen and colon found by total_fastest (6 mm), plus 20 mm",
    "ventricle_parts": "the brain found by total_fastest (6 mm), plus 20 mm",
    "liver_segments": "the liver found by total_fastest (6 mm), plus 20 mm",
    "liver_segments_mr": "the liver found by total_mr_fast (3 mm), plus 20 mm",
    "liver_lesions": "the liver found by total_fast (3 mm), plus 20 mm",
    "liver_lesions_mr": "the liver found by total_mr_fast (3 mm), plus 20 mm",
    "craniofacial_structures": "the skull found by total_fastest (6 mm), plus 20 mm",
    "abdominal_muscles": "the trunk found by body_fast (6 mm), plus 20 mm",
    "teeth": "the teeth found by the whole craniofacial_structures task, plus 10 mm",
}

_TASK_OF = {dataset: task for task, datasets in TASK_DATASETS.items() for dataset in datasets}


def task_of(dataset: str) -> str | None:
    """The TotalSegmentator task whose network a dataset folder (``DatasetNNN_Name``) is, or None."""
    return _TASK_OF.get(dataset)


def network_problem(dataset: str) -> str | None:
    """Why the network of this dataset folder cannot be run as TotalSegmentator runs it, or None."""
    task = task_of(dataset)
    if task in CROPS:
        return (
            f"TotalSegmentator runs this network ({task}) on the input cropped to {CROPS[task]}; "
            "SegUncertainty runs one network on the whole input and does not make that crop"
        )
    return None


def task_problem(task: str) -> str | None:
    """Why a task cannot be run as one network, or None (unknown tasks: None)."""
    datasets = TASK_DATASETS.get(task, ())
    if len(datasets) > 1:
        parts = ", ".join(f"totalsegmentator:{d}" for d in datasets)
        return (
            f"TotalSegmentator's task {task} is {len(datasets)} networks whose label maps it merges; SegUncertainty "
            f"runs one network per model: take a part ({parts})"
            + (f" or totalsegmentator:{task}_fast, one network at 3 mm" if f"{task}_fast" in TASK_DATASETS else "")
        )
    return network_problem(datasets[0]) if datasets else None
