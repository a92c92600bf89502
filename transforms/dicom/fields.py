"""The fields of a :class:`~transforms.dicom.slice_header.SliceHeader` from plain header values.

Values come by keyword, as pydicom gives them: from a ``Dataset`` (:mod:`transforms.dicom.headers`)
or straight from a file's bytes (:mod:`transforms.dicom.raw`). :func:`header_fields` computes every
field of one file; :func:`header_fields_like` only the per-file ones, for a file of a series whose
first file's fields are known (``radpipe scan`` calls both once per file).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import DicomReadError, NotAnImageError
from transforms.dicom.header_values import (
    as_float,
    as_floats,
    as_int,
    as_text,
    first_item,
)
from transforms.dicom.slice_header import FrameInfo, SliceHeader, header_from_fields
from transforms.dicom.sop import is_known_class, non_image_reason, uid_name

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def check_image(ds: Dataset | Mapping[str, Any], sop_class: str, path: str | Path) -> None:
    """Refuse headers that hold no image, or an image without a matrix.

    Args:
        ds: a dataset or a keyword -> value mapping.
        sop_class: its SOP class UID (from the file meta when the dataset lacks one).
        path: the file, for messages.

    Raises:
        NotAnImageError: the header holds no image.
        DicomReadError: an image object without Rows/Columns (damaged).
    """
    reason = non_image_reason(ds, sop_class)
    if reason is not None:
        raise NotAnImageError(f"{path}: {reason}; not an image, skipped")
    if not ds.get("Rows") or not ds.get("Columns"):
        what = f"{uid_name(sop_class)} object" if is_known_class(sop_class) else (
            f"object of SOP class '{sop_class}', which DICOM does not define," if sop_class else "object")
        raise DicomReadError(f"{path}: {what} without Rows/Columns; the file is damaged or truncated: re-export it")


def pixel_data_bytes(rows: int, cols: int, frames: int, samples: int, bits: int) -> int:
    """Bytes of uncompressed pixel data: Rows x Columns x frames x samples x BitsAllocated, rounded up to bytes."""
    return (rows * cols * frames * samples * max(bits, 1) + 7) // 8


def check_pixel_data(path: str | Path, *, offset: int, length: int, size: int, rows: int, cols: int, frames: int,
                     samples: int, bits: int, native: bool) -> None:
    """Refuse pixel data cut short by the file's end, or (``native``: uncompressed) shorter or longer than
    Rows x Columns x frames x samples x BitsAllocated (one byte more pads to an even length).

    Raises:
        DicomReadError: naming the file, the sizes, and the fix.
    """
    if offset + length > size:
        raise DicomReadError(f"{path}: truncated: the pixel data should end at byte {offset + length} but the file "
                             f"has {size} bytes; re-export it")
    expected = pixel_data_bytes(rows, cols, frames, samples, bits)
    if native and not expected <= length <= expected + 1:
        raise DicomReadError(f"{path}: pixel data holds {length} bytes but {rows}x{cols}x{frames} frames x {samples} "
                             f"samples of {bits} bits need {expected}; the header does not match the pixels "
                             "(damaged file): re-export it")


def missing_pixels_error(path: str | Path, sop_class: str, size: int) -> DicomReadError:
    """The error for an image object whose file ends before its pixel data."""
    return DicomReadError(f"{path}: {uid_name(sop_class)} object without pixel data: the file ends before its "
                          f"image ({size} bytes; truncated): re-export it")


def header_fields(values: Mapping[str, Any], path: str | Path, *, transfer_syntax: str,
                  media_sop_class: str = "") -> dict[str, Any]:
    """The fields of the :class:`SliceHeader` of plain header values (keyword -> value, as pydicom gives them).

    ``SliceHeader(**header_fields(...))`` equals :func:`~transforms.dicom.headers.header_from_dataset`
    of the same file; the dict lets a caller replace fields (pseudonymise) before building the header
    once. Siemens mosaic details (which need the private CSA header) are left out.

    Args:
        values: header values by keyword (e.g. :attr:`transforms.dicom.raw.ParsedFile.values`).
        path: the file.
        transfer_syntax: the file meta's TransferSyntaxUID.
        media_sop_class: the file meta's MediaStorageSOPClassUID (used when SOPClassUID is absent).

    Returns:
        Every :class:`SliceHeader` field by name.

    Raises:
        NotAnImageError: the values describe no image.
        DicomReadError: an image object without a matrix (damaged).
    """
    path = os.fspath(path)
    check_image(values, str(values.get("SOPClassUID", "") or media_sop_class), path)
    return fields_from_values(values, path, transfer_syntax)


def header_from_values(values: Mapping[str, Any], path: str | Path, *, transfer_syntax: str,
                       media_sop_class: str = "") -> SliceHeader:
    """:func:`header_fields` as a :class:`SliceHeader`.

    Args:
        values, path, transfer_syntax, media_sop_class: as :func:`header_fields`.

    Returns:
        The header.

    Raises:
        NotAnImageError, DicomReadError: as :func:`header_fields`.
    """
    return header_from_fields(header_fields(values, path, transfer_syntax=transfer_syntax,
                                            media_sop_class=media_sop_class))


def header_fields_like(values: Mapping[str, Any], path: str | Path, like: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`header_fields` of a file whose values other than the per-file ones equal those of ``like``'s file.

    The files of a series share every value but :data:`~transforms.dicom.header_values.PER_FILE_KEYWORDS`
    (and their transfer syntax and media SOP class), so a scan computes the shared fields once per
    series and only the per-file fields for each file.

    Args:
        values: the file's header values by keyword.
        path: the file.
        like: the fields of an earlier file of the series (not changed).

    Returns:
        Every :class:`SliceHeader` field by name.
    """
    fields = dict(like)
    frames = like["frames"]
    fields.update(_per_file_fields(values, frames[0] if frames else None))
    fields["path"] = str(path)
    return fields


def _frame_infos(ds: Dataset | Mapping[str, Any]) -> tuple[FrameInfo, ...]:
    """Per-frame geometry of an enhanced multi-frame file (per-frame groups override shared ones)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return ()
    shared = first_item(ds, "SharedFunctionalGroupsSequence")

    def group(frame: Dataset, keyword: str) -> Dataset | None:
        return first_item(frame, keyword) or first_item(shared, keyword)

    infos = []
    for frame in per_frame:
        plane_pos = group(frame, "PlanePositionSequence")
        plane_ori = group(frame, "PlaneOrientationSequence")
        measures = group(frame, "PixelMeasuresSequence")
        content = group(frame, "FrameContentSequence")
        value_tx = group(frame, "PixelValueTransformationSequence")
        echo = group(frame, "MREchoSequence")
        infos.append(FrameInfo(
            position=as_floats(plane_pos.get("ImagePositionPatient"), 3) if plane_pos else None,
            orientation=as_floats(plane_ori.get("ImageOrientationPatient"), 6) if plane_ori else None,
            pixel_spacing=as_floats(measures.get("PixelSpacing"), 2) if measures else None,
            temporal_index=as_int(content.get("TemporalPositionIndex")) if content else None,
            stack_id=str(content.get("StackID", "")) or None if content else None,
            in_stack_position=as_int(content.get("InStackPositionNumber")) if content else None,
            echo_time=as_float(echo.get("EffectiveEchoTime")) if echo else None,
            slope=as_float(value_tx.get("RescaleSlope")) or 1.0 if value_tx else 1.0,
            intercept=as_float(value_tx.get("RescaleIntercept")) or 0.0 if value_tx else 0.0,
        ))
    return tuple(infos)


def fields_from_values(v: Mapping[str, Any], path: str | Path, transfer_syntax: str) -> dict[str, Any]:
    """:func:`header_fields` without the image check: the caller has made it.

    Args:
        v: header values by keyword, of an image (Rows and Columns present).
        path: the file.
        transfer_syntax: the file meta's TransferSyntaxUID.

    Returns:
        Every :class:`SliceHeader` field by name; the Siemens mosaic count and normal are ``None``.
    """
    image_type = tuple(str(x).upper() for x in (v.get("ImageType") or ()))
    if isinstance(v.get("ImageType"), str):
        image_type = tuple(v["ImageType"].upper().split("\\"))
    frames = _frame_infos(v)
    first = frames[0] if frames else None
    pixel_spacing = as_floats(v.get("PixelSpacing"), 2) or (first.pixel_spacing if first else None)
    pixel_spacing = pixel_spacing or as_floats(v.get("ImagerPixelSpacing"), 2)
    shared_measures = first_item(first_item(v, "SharedFunctionalGroupsSequence"), "PixelMeasuresSequence")
    slice_thickness = as_float(v.get("SliceThickness"))
    if slice_thickness is None and shared_measures is not None:
        slice_thickness = as_float(shared_measures.get("SliceThickness"))
    return dict(
        path=str(path),
        sop_class_uid=str(v.get("SOPClassUID", "")),
        modality=as_text(v, "Modality").upper(),
        study_uid=str(v.get("StudyInstanceUID", "")),
        series_uid=str(v.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(v.get("FrameOfReferenceUID", "")),
        patient_id=as_text(v, "PatientID"),
        patient_name=as_text(v, "PatientName"),
        patient_birth_date=as_text(v, "PatientBirthDate"),
        patient_sex=as_text(v, "PatientSex"),
        patient_age=as_text(v, "PatientAge"),
        accession_number=as_text(v, "AccessionNumber"),
        study_date=as_text(v, "StudyDate"),
        study_description=as_text(v, "StudyDescription"),
        series_number=as_int(v.get("SeriesNumber")),
        series_description=as_text(v, "SeriesDescription"),
        protocol_name=as_text(v, "ProtocolName"),
        manufacturer=as_text(v, "Manufacturer"),
        model=as_text(v, "ManufacturerModelName"),
        institution=as_text(v, "InstitutionName"),
        body_part=as_text(v, "BodyPartExamined"),
        image_type=image_type,
        rows=int(v["Rows"]),
        cols=int(v["Columns"]),
        pixel_spacing=pixel_spacing,
        orientation=as_floats(v.get("ImageOrientationPatient"), 6) or (first.orientation if first else None),
        slice_thickness=slice_thickness,
        spacing_between_slices=as_float(v.get("SpacingBetweenSlices")),
        repetition_time=as_float(v.get("RepetitionTime")),
        inversion_time=as_float(v.get("InversionTime")),
        flip_angle=as_float(v.get("FlipAngle")),
        field_strength=as_float(v.get("MagneticFieldStrength")),
        n_temporal_positions=as_int(v.get("NumberOfTemporalPositions")),
        number_of_frames=as_int(v.get("NumberOfFrames")) or 1,
        transfer_syntax=transfer_syntax,
        photometric=as_text(v, "PhotometricInterpretation").upper(),
        samples_per_pixel=as_int(v.get("SamplesPerPixel")) or 1,
        bits_allocated=as_int(v.get("BitsAllocated")) or 0,
        bits_stored=as_int(v.get("BitsStored")) or 0,
        pixel_representation=as_int(v.get("PixelRepresentation")) or 0,
        gantry_tilt=as_float(v.get("GantryDetectorTilt")) or 0.0,
        convolution_kernel=as_text(v, "ConvolutionKernel"),
        kvp=as_float(v.get("KVP")),
        view_position=as_text(v, "ViewPosition"),
        is_mosaic="MOSAIC" in image_type,
        mosaic_count=None,
        mosaic_normal=None,
        frame_offsets=as_floats(v.get("GridFrameOffsetVector"), as_int(v.get("NumberOfFrames")) or 1),
        frames=frames,
        pixel_offset=None,
        **_per_file_fields(v, first),
    )


def _first_float(v: Mapping[str, Any], *keywords: str) -> float | None:
    """The first of ``keywords`` that holds a finite number."""
    for keyword in keywords:
        number = as_float(v.get(keyword))
        if number is not None and math.isfinite(number):
            return number
    return None


def _gradient(v: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """The diffusion gradient direction: public (0018,9089), else Philips' (2005,10B0..B2)."""
    public = as_floats(v.get("DiffusionGradientOrientation"), 3)
    if public is not None:
        return public  # type: ignore[return-value]
    parts = [as_float(v.get(k)) for k in ("PhilipsGradientRL", "PhilipsGradientAP", "PhilipsGradientFH")]
    return None if None in parts else (parts[0], parts[1], parts[2])  # type: ignore[return-value]


def _scale_slope(v: Mapping[str, Any]) -> float | None:
    """The private scale slope (2005,100E) (Philips'; the loader uses it only for Philips files); None when
    absent, zero or not a finite number."""
    slope = as_float(v.get("PhilipsScaleSlope"))
    return slope if slope is not None and math.isfinite(slope) and slope != 0 else None


#: the fields :func:`header_fields_like` computes for each file (from its own values); the rest a series' files share
PER_FILE_FIELDS = ("sop_instance_uid", "position", "instance_number", "echo_number", "echo_time", "acquisition_number",
                   "acquisition_time", "temporal_position", "trigger_time", "slope", "intercept", "philips_scale_slope",
                   "diffusion_b_value", "diffusion_gradient")


def _per_file_fields(v: Mapping[str, Any], first: FrameInfo | None) -> dict[str, Any]:
    """The fields computed from :data:`~transforms.dicom.header_values.PER_FILE_KEYWORDS` (and the first
    frame's, shared), and from nothing else."""
    return dict(
        sop_instance_uid=str(v.get("SOPInstanceUID", "")),
        position=as_floats(v.get("ImagePositionPatient"), 3) or (first.position if first else None),
        instance_number=as_int(v.get("InstanceNumber")),
        echo_number=as_int(v.get("EchoNumbers")),
        echo_time=as_float(v.get("EchoTime")),
        acquisition_number=as_int(v.get("AcquisitionNumber")),
        acquisition_time=as_text(v, "AcquisitionTime") or as_text(v, "ContentTime"),
        temporal_position=as_int(v.get("TemporalPositionIdentifier")),
        trigger_time=as_float(v.get("TriggerTime")),
        slope=as_float(v.get("RescaleSlope")) or (first.slope if first else 1.0),
        intercept=as_float(v.get("RescaleIntercept")) or (first.intercept if first else 0.0),
        philips_scale_slope=_scale_slope(v),
        diffusion_b_value=_first_float(v, "DiffusionBValue", "PhilipsBValue"),
        diffusion_gradient=_gradient(v),
    )
