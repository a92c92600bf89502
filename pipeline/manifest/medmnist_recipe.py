"""The default training recipes ``radpipe import-medmnist`` writes into ``DIR/config.yaml``: one for 2D, one for 3D.

One recipe per number of spatial dimensions, for any MedMNIST-like file (grey or RGB, binary, multi-class
or multi-label, any size variant); nothing depends on the dataset except the number of training images,
which sets the epochs: ``epochs = clip(round(budget / n_train), min_epochs, max_epochs)``, a fixed budget of
training images sized to finish within 15 minutes on a 2-core CPU. A run of up to ``fp32_images`` training
images trains in float32; a longer one in bf16 on a CPU that computes it natively (``train.cpu_bf16``), the
speed it needs to stay within the budget (bf16 cost accuracy over 100 epochs of a small set: README).
``data_manifests/medmnist_2d.yaml`` and ``medmnist_3d.yaml`` show the same recipes for PneumoniaMNIST and
AdrenalMNIST3D (a test keeps them equal), and ``benchmarks/medmnist.py`` measures them, as written, against the
MedMNIST v2 paper.

Example:
    >>> recipe(2, 4708)["train"]["epochs"]
    18
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """The settings of one recipe that do not depend on the dataset, and its budget of training images.

    Attributes:
        model: the ``model`` section.
        transforms: settings of the ``transforms`` section (the importer adds size, channels and intensity).
        train: settings of the ``train`` section; ``epochs``, ``warmup_epochs`` and ``val_every`` come from
            the budget.
        budget_images: training images seen over the run (epochs x training cases).
        min_epochs: fewest epochs, however large the training split.
        max_epochs: most epochs, however small the training split.
        validations: validations per run, about (``val_every = max(1, round(epochs / validations))``).
        warmup_from: runs of at least this many epochs warm up for one epoch.
        min_size: images smaller than this along an axis are resized up to it (0: the files' size).
        evaluation: settings of the ``eval`` section.
        fp32_images: runs of at most this many training images (epochs x cases) train in float32, longer ones in
            bf16 where the CPU has it (``train.cpu_bf16``).
    """

    model: dict[str, Any]
    transforms: dict[str, Any]
    train: dict[str, Any]
    budget_images: int
    min_epochs: int = 2
    max_epochs: int = 40
    validations: int = 20
    warmup_from: int = 10
    min_size: int = 0
    evaluation: dict[str, Any] = field(default_factory=dict)
    fp32_images: int = 0


_TRAIN = {"lr": 1e-3, "optimizer": "adamw", "weight_decay": 1e-4, "scheduler": "cosine", "key_metric": "auc"}

#: The recipe of each number of spatial dimensions (see the README's MedMNIST section for how it was chosen).
#: 2D: ResNet-18 (chosen over ResNet-10 on validation once bf16 made it affordable: BreastMNIST 0.930 -> 0.942,
#: PneumoniaMNIST 0.9973 -> 0.9971, both above the rule's bars); images below 64 px are resized up to 64 and go
#: through the standard stem (7x7 stride-2 conv + max-pool),
#: which trains about twice as fast on a CPU as the small-input stem at 28 px (160 vs 75 img/s) and reached a
#: higher PneumoniaMNIST validation AUC (0.997 vs 0.994); ``medium`` augmentation (small affine, noise, gamma,
#: intensity scaling); predictions averaged over the flips along both axes (``eval.tta``: the training flips already
#: cover them), which raised the validation AUC of the three seeds' best checkpoints on BreastMNIST (0.920 to 0.930)
#: and PneumoniaMNIST (0.9967 to 0.9973). 3D: the standard stem at the files' 28^3 (the small stem runs at
#: 0.4 volumes/s); flip TTA along all three axes, which raised AdrenalMNIST3D's validation AUC from 0.813 to 0.821
#: though training never flips across the superior-inferior axis. Precision: float32 up to ``fp32_images`` training
#: images (2D: 60,000, about 7.6 min of ResNet-18 steps at 64 px in fp32 on a 2-core EPYC, 131 img/s, half the
#: budget; 3D: 12,000 volumes, more than its budget); beyond, bf16 on a CPU that has it natively
#: (``train.cpu_bf16``: 1.8x the fp32 speed of a 64 px ResNet-10 step), as PneumoniaMNIST's 85,000 images need.
#: In bf16 BreastMNIST's 100-epoch runs lost accuracy (ResNet-10: validation AUC 0.930 -> 0.919, test 0.900 ->
#: 0.872).
RECIPES: dict[int, Recipe] = {
    2: Recipe(model={"name": "resnet18", "small_input": False}, transforms={"augment": "medium"},
              train={**_TRAIN, "batch_size": 64}, budget_images=85_000, max_epochs=100, validations=10, min_size=64,
              evaluation={"tta": True}, fp32_images=60_000),
    3: Recipe(model={"name": "resnet10", "small_input": False}, transforms={"augment": "light"},
              train={**_TRAIN, "batch_size": 32}, budget_images=9_600, evaluation={"tta": True}, fp32_images=12_000),
}


def recipe_epochs(spatial_dims: int, n_train: int) -> int:
    """Epochs of the recipe for ``spatial_dims`` on a training split of ``n_train`` cases."""
    r = RECIPES[spatial_dims]
    return int(min(max(round(r.budget_images / max(1, n_train)), r.min_epochs), r.max_epochs))


def recipe(spatial_dims: int, n_train: int, size: tuple[int, ...] = (), epochs: int | None = None
           ) -> dict[str, dict[str, Any]]:
    """The ``model``, ``transforms``, ``train`` and ``eval`` config sections of the recipe for this dataset.

    Args:
        spatial_dims: 2 or 3.
        n_train: cases in the training split (sets the epochs).
        size: the files' image size: the model's input size is this, raised to the recipe's ``min_size``;
            the small-input stem is kept up to 64 px only.
        epochs: instead of the budget's epochs (warm-up and validation interval follow them).

    Raises:
        KeyError: ``spatial_dims`` is neither 2 nor 3.
    """
    r = RECIPES[spatial_dims]
    epochs = recipe_epochs(spatial_dims, n_train) if epochs is None else epochs
    train = {**r.train, "epochs": epochs, "warmup_epochs": 1 if epochs >= r.warmup_from else 0,
             "val_every": max(1, round(epochs / r.validations)), "cpu_bf16": epochs * n_train > r.fp32_images}
    model = dict(r.model)
    model["small_input"] = bool(model.get("small_input")) and max(size, default=0) <= 64
    transforms = dict(r.transforms)
    if size:
        transforms["size"] = [max(int(s), r.min_size) for s in size]
    return {"model": model, "transforms": transforms, "train": train, "eval": dict(r.evaluation)}


def describe_recipe(spatial_dims: int, n_train: int, size: tuple[int, ...] = ()) -> str:
    """One line naming the recipe's model, augmentation, optimiser and epochs for ``n_train`` training cases."""
    r = RECIPES[spatial_dims]
    s = recipe(spatial_dims, n_train, size)
    m, t = s["model"], s["train"]
    stem = "small-input stem" if m.get("small_input") else "standard stem"
    at = f" at {'x'.join(map(str, s['transforms']['size']))}" if "size" in s["transforms"] else ""
    tta = ", flip TTA" if s["eval"].get("tta") else ""
    precision = "bf16 where the CPU has it" if t["cpu_bf16"] else "float32"
    augment = s["transforms"].get("augment", "light")
    return (f"{m['name']} ({stem}){at}, augment {augment}, {t['optimizer']} lr {t['lr']:g} "
            f"{t['scheduler']}, batch {t['batch_size']}, {t['epochs']} epochs of {n_train} "
            f"(budget {r.budget_images:,} images), {precision}{tta}")
