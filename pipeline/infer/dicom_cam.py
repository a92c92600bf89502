"""Grad-CAM maps as DICOM Parametric Maps (``radpipe predict --cam DIR --dicom-out DIR2 [--push SOURCE]``).

One Parametric Map per predicted DICOM series whose map :mod:`pipeline.infer.cam` wrote (``DIR/<stem>.cam.nii.gz``),
written with ``highdicom`` into ``DIR2/<series_id>.cam.dcm`` beside the series' SR. A Parametric Map rather than
a Secondary Capture because it keeps the map's geometry: the frames are the map's slices (along its last axis),
each placed in the source's frame of reference by its own Image Position / Orientation (Patient), so a viewer
that reads parametric maps (e.g. 3D Slicer's QuantitativeReporting extension) lays it over the source series,
whatever grid the model saw (orientation, spacing, crop and resize of the run's transforms). A Secondary Capture
carries no geometry: a viewer shows it beside the series, never over it. A source without a frame of reference
(projection radiographs) gets no map: the Parametric Map IOD requires one.

Values: unsigned 16-bit, the map's [0, 1] times :data:`LEVELS` (1,000), with a real world value mapping (slope
1/1,000, unit ``1``) that gives the map's value back; the window spans [0, 1]. The patient and study modules
and the frame of reference are the source's (highdicom copies them); the series is new (number
:data:`CAM_SERIES_NUMBER`). The UIDs derive from the source series, the weights and the prediction, so a re-run
writes the same object and a PACS stores a re-sent one once. ``--push`` sends these with the SRs
(:func:`pipeline.infer.dicom_sr.push_srs`, recorded in ``DIR2/pushed.csv``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.files import atomic_open
from pipeline.infer.cam import cam_stem
from pipeline.infer.dicom_sr import (
    ModelIdentity,
    SrSummary,
    pending_rows,
    series_sources,
    source_headers,
)

log = logging.getLogger("radpipe")
CAM_SERIES_NUMBER = 9901
#: Stored value of a map value of 1.
LEVELS = 1000
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def cam_geometry(affine_ras: np.ndarray, n_slices: int) -> tuple[Any, Any, list[Any]]:
    """Pixel measures, plane orientation and one plane position per slice of a map with NIfTI affine ``affine_ras``.

    A map array ``cam[i, j, k]`` becomes frame ``k`` with rows along ``j`` and columns along ``i`` (frame pixels
    ``cam[:, :, k].T``); positions and directions are DICOM patient coordinates (LPS).

    Raises:
        PipelineError: the affine's axes are degenerate or not orthogonal (no DICOM plane geometry describes it).
    """
    import highdicom as hd

    lps = _RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64)
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(axes)):
        raise PipelineError("the Grad-CAM map's affine has a zero or non-finite axis")
    units = axes / spacing
    if abs(float(units[:, 0] @ units[:, 1])) > 1e-4:
        raise PipelineError("the Grad-CAM map's grid is sheared (rows and columns not orthogonal)")
    orientation = hd.PlaneOrientationSequence("PATIENT", [*(float(v) for v in units[:, 0]),
                                                          *(float(v) for v in units[:, 1])])
    measures = hd.PixelMeasuresSequence(pixel_spacing=[float(spacing[1]), float(spacing[0])],
                                        slice_thickness=float(spacing[2]), spacing_between_slices=float(spacing[2]))
    positions = [hd.PlanePositionSequence("PATIENT", [float(v) for v in (lps @ [0.0, 0.0, k, 1.0])[:3]])
                 for k in range(n_slices)]
    return measures, orientation, positions


def build_cam_map(sources: list[Any], cam: np.ndarray, affine_ras: np.ndarray, prediction: dict[str, str],
                  model: ModelIdentity) -> Any:
    """The Parametric Map of one series' Grad-CAM.

    Args:
        sources: the series' headers (pydicom Datasets, pixel data not needed).
        cam: the map in [0, 1], 2D or 3D, on the grid of ``affine_ras``.
        affine_ras: the map's NIfTI affine (RAS, mm), as :func:`pipeline.infer.cam.save_cam` writes it.
        prediction: the predictions row (``pred``, optionally ``threshold``): part of the UIDs' seed.
        model: the model (its weights' sha256 is part of the UIDs' seed).
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    volume = np.asarray(cam, dtype=np.float64)
    if volume.ndim == 2:
        volume = volume[..., None]
    if volume.ndim != 3 or min(volume.shape) < 1 or not np.all(np.isfinite(volume)):
        raise PipelineError(f"the Grad-CAM map has shape {tuple(cam.shape)} or non-finite values; expected a 2D or "
                            "3D map in [0, 1]")
    if not sources[0].get("FrameOfReferenceUID"):
        raise PipelineError("the source series has no frame of reference (a projection radiograph?), which a "
                            "Parametric Map needs; the map stays in the --cam folder (NIfTI + PNG)")
    frames = np.rint(np.clip(volume, 0.0, 1.0) * LEVELS).astype(np.uint16).transpose(2, 1, 0)
    measures, orientation, positions = cam_geometry(affine_ras, frames.shape[0])
    first = sources[0]
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="GRADCAM", lut_explanation="Grad-CAM (HiResCAM) of the predicted class, scaled to [0, 1]",
        unit=hd.sr.CodedConcept("1", "UCUM", "no units"), value_range=(0, LEVELS), slope=1.0 / LEVELS, intercept=0.0)
    seed = [first.SeriesInstanceUID, model.weights_sha256, prediction.get("pred", ""),
            prediction.get("threshold", ""), "gradcam"]
    parametric_map = hd.pm.ParametricMap(
        source_images=sources, pixel_array=frames, series_instance_uid=generate_uid(entropy_srcs=[*seed, "series"]),
        series_number=CAM_SERIES_NUMBER, sop_instance_uid=generate_uid(entropy_srcs=[*seed, "instance"]),
        instance_number=1, manufacturer="radpipe", manufacturer_model_name=f"radpipe {model.name}"[:64],
        software_versions=model.version, device_serial_number=model.weights_sha256[:16],
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=LEVELS / 2, window_width=LEVELS)],
        content_label="GRADCAM",
        content_description=f"Grad-CAM of {prediction.get('pred', '')}"[:64],
        pixel_measures=measures, plane_orientation=orientation, plane_positions=positions,
        series_description=f"radpipe {model.name} Grad-CAM"[:64])
    organization = generate_uid(entropy_srcs=[*seed, "dimensions"])  # highdicom draws a random one
    for item in [*parametric_map.DimensionOrganizationSequence, *parametric_map.DimensionIndexSequence]:
        item.DimensionOrganizationUID = organization
    return parametric_map


def write_cam_maps(predictions: str | Path, cam_dir: str | Path, out_dir: str | Path,
                   model: ModelIdentity) -> SrSummary:
    """One Parametric Map per ``ok`` row of a DICOM predict whose map is in ``cam_dir`` (present ones kept).

    A row without a map (its Grad-CAM failed: the row's ``error`` cell says why) is listed as a failure.
    """
    import nibabel as nib

    out = Path(out_dir)
    refs = series_sources(predictions)
    summary = SrSummary()
    for row, series_id, path in pending_rows(predictions, out, "cam.dcm", summary):
        try:
            nifti = Path(cam_dir) / f"{cam_stem(series_id)}.cam.nii.gz"
            if not nifti.is_file():
                raise PipelineError(row.get("error") or f"no Grad-CAM map {nifti.name} in {cam_dir}")
            sources = source_headers(refs, series_id)
            image = nib.load(nifti)
            parametric_map = build_cam_map(sources, np.asanyarray(image.dataobj), image.affine, row, model)
            out.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as f:
                parametric_map.save_as(f, enforce_file_format=True)
            summary.n_written += 1
        except Exception as e:  # noqa: BLE001 - one series' map never stops the others
            summary.failures.append((path.name, f"{type(e).__name__}: {e}".splitlines()[0][:300]))
    return summary
