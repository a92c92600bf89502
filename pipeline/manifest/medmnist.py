"""Import a MedMNIST ``.npz`` file as NIfTI images plus a manifest.

``radpipe import-medmnist pneumoniamnist.npz --out DIR`` writes:

* ``DIR/images/<split>_<index>.nii.gz``: one image per case, pixels unchanged (uint8 kept),
  identity affine (1 mm voxels). A 2D image is stored with x along its columns, as radpipe reads
  pictures, so that a NIfTI viewer and ``radpipe preview`` show it upright: a grey image is a 2D
  NIfTI (W, H) and loads as (1, W, H); an RGB image is stored (W, H, 1, 3) and loads through
  ``LoadImaged(ensure_channel_first=True)`` as 3 channels, shape (3, W, H, 1); a 3D
  volume (D, H, W) is stored as it is and loads as (1, D, H, W).
* ``DIR/manifest.csv``: ``image, label, patient_id, split`` (multi-label files: one 0/1
  column per class instead of ``label``). MedMNIST has no patient ids: ``patient_id`` is
  the case id (e.g. ``train_00012``), so grouping by patient is a no-op here.
* ``DIR/labels.json``: task, classes in the official label order, label columns.
* ``DIR/config.yaml``: task, classes, spatial dims, size, ``minmax`` intensity, ``channels: rgb`` for RGB
  files (else ``grey``) and the default recipe of :mod:`pipeline.manifest.medmnist_recipe` (model, input
  size, augmentation, optimiser, epochs from the size of the training split).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import config_from_dict, save_config
from pipeline.errors import ImageReadError
from pipeline.files import atomic_open
from pipeline.manifest.labels import LabelMap
from pipeline.manifest.medmnist_recipe import recipe

SPLITS = ("train", "val", "test")
_ORGANS = ("bladder", "femur_left", "femur_right", "heart", "kidney_left", "kidney_right", "liver", "lung_left",
           "lung_right", "pancreas", "spleen")
#: Class names of the known MedMNIST v2 datasets, in the official label order.
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth_muscle", "normal_colon_mucosa",
                  "cancer_associated_stroma", "colorectal_adenocarcinoma_epithelium"),
    "chestmnist": ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                   "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening", "hernia"),
    "dermamnist": ("actinic_keratoses_and_intraepithelial_carcinoma", "basal_cell_carcinoma",
                   "benign_keratosis_like_lesions", "dermatofibroma", "melanoma", "melanocytic_nevi",
                   "vascular_lesions"),
    "octmnist": ("choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("grade_0", "grade_1", "grade_2", "grade_3", "grade_4"),
    "breastmnist": ("malignant", "normal_or_benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast", "immature_granulocytes", "lymphocyte", "monocyte",
                   "neutrophil", "platelet"),
    "tissuemnist": ("collecting_duct_connecting_tubule", "distal_convoluted_tubule", "glomerular_endothelial_cells",
                    "interstitial_endothelial_cells", "leukocytes", "podocytes", "proximal_tubule_segments",
                    "thick_ascending_limb"),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
    "organmnist3d": ("liver", "kidney_right", "kidney_left", "femur_right", "femur_left", "bladder", "heart",
                     "lung_right", "lung_left", "spleen", "pancreas"),
    "nodulemnist3d": ("benign", "malignant"),
    "adrenalmnist3d": ("normal", "hyperplasia"),
    "fracturemnist3d": ("buckle_rib_fracture", "nondisplaced_rib_fracture", "displaced_rib_fracture"),
    "vesselmnist3d": ("vessel", "aneurysm"),
    "synapsemnist3d": ("inhibitory_synapse", "excitatory_synapse"),
}
FORMATS = {"nifti": ".nii.gz", "nifti-raw": ".nii"}


@dataclass
class MedMNISTImport:
    """What :func:`import_medmnist` wrote."""

    manifest: Path
    name: str
    task: str
    classes: tuple[str, ...]
    label_columns: tuple[str, ...]
    spatial_dims: int
    channels: int
    size: tuple[int, ...]
    counts: dict[str, int] = field(default_factory=dict)


def dataset_name(path: str | Path) -> str:
    """The MedMNIST dataset of a file name: ``pneumoniamnist_64.npz`` -> ``pneumoniamnist``."""
    stem = Path(path).name.split(".")[0].lower()
    return re.sub(r"_(28|64|128|224)$", "", stem)


def class_names(name: str, n_classes: int, multilabel: bool = False) -> tuple[str, ...]:
    """Known class names of dataset ``name`` when they fit, else ``class_0 .. class_{n-1}``.

    Single-label files fit when the highest label is within the known classes (a subset may
    miss the last class); multi-label files when the number of label columns is equal.
    """
    known = MEDMNIST_CLASSES.get(name, ())
    if (multilabel and len(known) == n_classes) or (not multilabel and 0 < n_classes <= len(known)):
        return known
    return tuple(f"class_{i}" for i in range(n_classes))


def _read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not path.is_file():
        raise ImageReadError(f"MedMNIST file {path} not found; give the path of a .npz file")
    try:
        npz = np.load(path, allow_pickle=False)
        keys = set(npz.files)
    except (OSError, ValueError) as e:
        raise ImageReadError(f"{path} is not a readable .npz file ({e}); download it again") from e
    result = {}
    for split in SPLITS:
        if f"{split}_images" in keys and f"{split}_labels" in keys:
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
            if labels.ndim == 1:
                labels = labels[:, None]
            if len(images) != len(labels) or labels.ndim != 2 or images.ndim not in (3, 4):
                raise ImageReadError(
                    f"{path}: {split}_images {images.shape} and {split}_labels {labels.shape} do not fit; expected "
                    "(N, H, W), (N, H, W, 3) or (N, D, H, W) images and (N, 1) or (N, K) labels"
                )
            result[split] = (images, labels)
    if not result:
        raise ImageReadError(
            f"{path} holds {sorted(keys)}; expected MedMNIST keys train_images, train_labels, val_images, ..."
        )
    return result


def _layout(images: np.ndarray) -> tuple[int, int]:
    """(spatial dims, channels) of a MedMNIST image stack."""
    if images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
        return 2, 3
    return images.ndim - 1, 1


def to_file_array(image: np.ndarray, rgb: bool) -> np.ndarray:
    """The array written to NIfTI: a 2D (H, W) image as (W, H) (x along the columns), RGB (H, W, 3) as
    (W, H, 1, 3); a 3D (D, H, W) volume as it is."""
    if rgb:
        return image.swapaxes(0, 1)[:, :, None, :]
    return image.T if image.ndim == 2 else image


def write_nifti(path: Path, array: np.ndarray) -> None:
    """Save ``array`` with an identity affine, keeping its dtype."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(array), np.eye(4))
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def import_medmnist(
    npz: str | Path, out: str | Path, fmt: str = "nifti", limit: int | None = None, workers: int = 1
) -> MedMNISTImport:
    """Write a MedMNIST file's images, ``manifest.csv``, ``labels.json`` and ``config.yaml`` into ``out``.

    Args:
        npz: the MedMNIST file (any size variant, 2D or 3D, grey or RGB).
        out: output folder (created).
        fmt: ``nifti`` (``.nii.gz``) or ``nifti-raw`` (``.nii``, larger but faster to read).
        limit: import only the first ``limit`` cases of each split.
        workers: threads writing image files (1 is fastest for small images: the work holds the GIL).

    Raises:
        ImageReadError: the file is missing, not an npz, or not MedMNIST-shaped.
    """
    import pandas as pd


    npz, out = Path(npz), Path(out)
    if fmt not in FORMATS:
        raise ImageReadError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    data = _read_npz(npz)
    name = dataset_name(npz)
    first_images, first_labels = next(iter(data.values()))
    spatial_dims, channels = _layout(first_images)
    multilabel = first_labels.shape[1] > 1
    n_classes = first_labels.shape[1] if multilabel else int(max(int(lab.max()) for _, lab in data.values()) + 1)
    classes = class_names(name, n_classes, multilabel)
    task = "multilabel" if multilabel else ("binary" if n_classes == 2 else "multiclass")
    label_columns = classes if multilabel else ("label",)
    (out / "images").mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    suffix = FORMATS[fmt]
    rows, jobs, counts = [], [], {}
    for split, (images, labels) in data.items():
        n = len(images) if limit is None else min(limit, len(images))
        counts[split] = n
        width = max(5, len(str(len(images) - 1)))
        for i in range(n):
            case = f"{split}_{i:0{width}d}"
            relative = f"images/{case}{suffix}"
            jobs.append((out / relative, to_file_array(images[i], channels == 3)))
            row = {"image": relative}
            if multilabel:
                row.update({c: int(v) for c, v in zip(classes, labels[i])})
            else:
                row["label"] = classes[int(labels[i, 0])]
            row.update({"patient_id": case, "split": split})
            rows.append(row)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda job: write_nifti(*job), jobs))
    with atomic_open(manifest, newline="") as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    LabelMap(task, classes, label_columns).save(out / "labels.json")
    size = tuple(int(s) for s in first_images.shape[1 : 1 + spatial_dims])
    if spatial_dims == 2:
        size = size[::-1]  # (x, y) = (W, H), as the files are written
    sections = recipe(spatial_dims, counts.get("train", 0), size)
    cfg = config_from_dict(
        {
            "data": {"manifest": str(manifest.absolute()), "task": task, "classes": list(classes),
                     "label_columns": list(label_columns)},
            "transforms": {"spatial_dims": spatial_dims, "orientation": "", "intensity": "minmax",
                           "channels": "rgb" if channels == 3 else "grey", **sections["transforms"]},
            "model": sections["model"],
            "train": sections["train"],
            "eval": sections["eval"],
        }
    )
    save_config(cfg, out / "config.yaml")
    return MedMNISTImport(manifest, name, task, classes, label_columns, spatial_dims, channels, size, counts)
