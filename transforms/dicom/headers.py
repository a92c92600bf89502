"""Header-only DICOM reading: the few tags that series grouping, geometry and ``radpipe scan`` need.

:func:`read_header` reads a file up to (not including) its pixel data, and only the tags listed in
:data:`HEADER_TAGS`, into a small frozen :class:`SliceHeader`. Enhanced (multi-frame) files carry
one :class:`FrameInfo` per frame from their functional groups. Identifiers (patient name, ID, birth
date, accession number) are kept so that the *caller* can pseudonymise them; never write them out
in clear.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from pipeline.errors import DicomReadError, NotAnImageError
from transforms.dicom.sop import non_image_reason

SIEMENS_MOSAIC_COUNT = Tag(0x0019, 0x100A)
SIEMENS_CSA_TAGS = (Tag(0x0029, 0x0010), Tag(0x0029, 0x0011), Tag(0x0029, 0x1010), Tag(0x0029, 0x1110))

HEADER_TAGS: tuple[Any, ...] = (
    "SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
    "AccessionNumber", "StudyDate", "StudyTime", "StudyDescription", "SeriesNumber", "SeriesDescription",
    "ProtocolName", "Manufacturer", "ManufacturerModelName", "InstitutionName", "BodyPartExamined",
    "ImageType", "Rows", "Columns", "PixelSpacing", "ImagerPixelSpacing", "ImageOrientationPatient",
    "ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices", "SliceLocation", "InstanceNumber",
    "EchoNumbers", "EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength",
    "AcquisitionNumber", "AcquisitionTime", "ContentTime", "TemporalPositionIdentifier",
    "NumberOfTemporalPositions", "TriggerTime", "NumberOfFrames", "PhotometricInterpretation",
    "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
    "GantryDetectorTilt", "GridFrameOffsetVector", "ConvolutionKernel", "KVP", "ViewPosition", "PatientPosition",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "DirectoryRecordSequence",
    SIEMENS_MOSAIC_COUNT, *SIEMENS_CSA_TAGS,
)

PIXEL_DATA_TAGS = (Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))
_SPECIFIC_TAGS = [*HEADER_TAGS, *PIXEL_DATA_TAGS]
_WANTED_TAGS = frozenset(int(Tag(t)) for t in (*HEADER_TAGS, "SpecificCharacterSet"))

Vec3 = tuple[float, float, float]
Cosines = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class FrameInfo:
    """Geometry and dimension values of one frame of an enhanced multi-frame file."""

    position: Vec3 | None
    orientation: Cosines | None
    pixel_spacing: tuple[float, float] | None
    temporal_index: int | None = None
    stack_id: str | None = None
    in_stack_position: int | None = None
    echo_time: float | None = None
    slope: float = 1.0
    intercept: float = 0.0


@dataclass(frozen=True)
class SliceHeader:
    """What grouping, geometry and scanning need from one DICOM file (no pixel data).

    Spatial fields follow DICOM: ``pixel_spacing`` is (row spacing, column spacing), ``orientation``
    the row then column direction cosines, ``position`` the centre of the first voxel, all in LPS mm.
    """

    path: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    modality: str = ""
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_description: str = ""
    series_number: int | None = None
    series_description: str = ""
    protocol_name: str = ""
    manufacturer: str = ""
    model: str = ""
    institution: str = ""
    body_part: str = ""
    image_type: tuple[str, ...] = ()
    rows: int = 0
    cols: int = 0
    pixel_spacing: tuple[float, float] | None = None
    orientation: Cosines | None = None
    position: Vec3 | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    instance_number: int | None = None
    echo_number: int | None = None
    echo_time: float | None = None
    repetition_time: float | None = None
    inversion_time: float | None = None
    flip_angle: float | None = None
    field_strength: float | None = None
    acquisition_number: int | None = None
    acquisition_time: str = ""
    temporal_position: int | None = None
    n_temporal_positions: int | None = None
    trigger_time: float | None = None
    number_of_frames: int = 1
    transfer_syntax: str = ""
    photometric: str = ""
    samples_per_pixel: int = 1
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    slope: float = 1.0
    intercept: float = 0.0
    gantry_tilt: float = 0.0
    convolution_kernel: str = ""
    kvp: float | None = None
    view_position: str = ""
    is_mosaic: bool = False
    mosaic_count: int | None = None
    mosaic_normal: Vec3 | None = None
    frame_offsets: tuple[float, ...] | None = None
    frames: tuple[FrameInfo, ...] = ()

    @property
    def is_multiframe(self) -> bool:
        """True for files with more than one frame (enhanced or legacy multi-frame)."""
        return self.number_of_frames > 1 or bool(self.frames)

    @property
    def is_localizer(self) -> bool:
        """True for scout / localizer images (ImageType LOCALIZER)."""
        return "LOCALIZER" in self.image_type


def _str(ds: Dataset | dict[str, Any], keyword: str) -> str:
    value = ds.get(keyword)
    if type(value) is str:  # the common case, without the ABC check below
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _float(value: Any) -> float | None:
    if type(value) is float or type(value) is int:
        return float(value)
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
        if value is None or value == "":
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(round(number))


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n else None


def _first_item(ds: Dataset | dict[str, Any] | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _frame_infos(ds: Dataset | dict[str, Any]) -> tuple[FrameInfo, ...]:
    """Per-frame geometry of an enhanced multi-frame file (per-frame groups override shared ones)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return ()
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")

    def group(frame: Dataset, keyword: str) -> Dataset | None:
        return _first_item(frame, keyword) or _first_item(shared, keyword)

    infos = []
    for frame in per_frame:
        plane_pos = group(frame, "PlanePositionSequence")
        plane_ori = group(frame, "PlaneOrientationSequence")
        measures = group(frame, "PixelMeasuresSequence")
        content = group(frame, "FrameContentSequence")
        value_tx = group(frame, "PixelValueTransformationSequence")
        echo = group(frame, "MREchoSequence")
        infos.append(FrameInfo(
            position=_floats(plane_pos.get("ImagePositionPatient"), 3) if plane_pos else None,
            orientation=_floats(plane_ori.get("ImageOrientationPatient"), 6) if plane_ori else None,
            pixel_spacing=_floats(measures.get("PixelSpacing"), 2) if measures else None,
            temporal_index=_int(content.get("TemporalPositionIndex")) if content else None,
            stack_id=str(content.get("StackID", "")) or None if content else None,
            in_stack_position=_int(content.get("InStackPositionNumber")) if content else None,
            echo_time=_float(echo.get("EffectiveEchoTime")) if echo else None,
            slope=_float(value_tx.get("RescaleSlope")) or 1.0 if value_tx else 1.0,
            intercept=_float(value_tx.get("RescaleIntercept")) or 0.0 if value_tx else 0.0,
        ))
    return tuple(infos)


def _mosaic_info(ds: Dataset) -> tuple[int | None, Vec3 | None]:
    """Number of images in a Siemens mosaic and the slice normal, from (0019,100A) and the CSA image header."""
    count = _int(ds[SIEMENS_MOSAIC_COUNT].value) if SIEMENS_MOSAIC_COUNT in ds else None
    normal = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that its readers are experimental
            from nibabel.nicom import csareader

        csa = csareader.get_csa_header(ds, "image")
        if csa:
            count = count or int(csareader.get_n_mosaic(csa))
            vector = csareader.get_slice_normal(csa)
            normal = tuple(float(v) for v in vector) if vector is not None else None
    except Exception:  # noqa: BLE001 - a damaged private header only loses these optional fields
        pass
    return count, normal


def _values(ds: Dataset) -> dict[str, Any]:
    """The elements of :data:`HEADER_TAGS` present in ``ds`` by keyword, each converted once."""
    values: dict[str, Any] = {}
    for tag in ds.keys():
        if int(tag) in _WANTED_TAGS:
            elem = ds[tag]
            values[elem.keyword or str(tag)] = elem.value
    return values


def _sop_class(ds: Dataset) -> str:
    return str(ds.get("SOPClassUID", "") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))


def _check_image(ds: Dataset | Mapping[str, Any], sop_class: str, path: str | Path) -> None:
    reason = non_image_reason(ds, sop_class)
    if reason is not None:
        raise NotAnImageError(f"{path}: {reason}; not an image, skipped")
    if not ds.get("Rows") or not ds.get("Columns"):
        raise DicomReadError(f"{path}: {UID(sop_class).name} object without Rows/Columns; the file "
                             "is damaged or truncated: re-export it")


def read_dataset(path: Path, *, header_only: bool = True) -> Dataset:
    """Read a DICOM file with pydicom, accepting old files without preamble but not arbitrary files.

    Args:
        path: the file.
        header_only: stop before the pixel data and read only :data:`HEADER_TAGS`.

    Raises:
        DicomReadError: missing, a folder, not DICOM, gzip-compressed, or damaged.
    """
    # header-only: the pixel data element is listed but deferred, so its offset and length are known
    # (to catch truncated files) without reading it
    kwargs: dict[str, Any] = {"defer_size": 1024, "specific_tags": _SPECIFIC_TAGS} if header_only else {}
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        pass  # no 128-byte preamble + "DICM": maybe an old file written without one
    except FileNotFoundError as e:
        raise DicomReadError(f"{path}: file not found; check the path") from e
    except IsADirectoryError as e:
        raise DicomReadError(f"{path}: is a folder, expected a DICOM file") from e
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise DicomReadError(f"{path}: cannot read DICOM header ({type(e).__name__}: {e}); the file is damaged or "
                             "truncated: re-export it or leave it out") from e
    try:
        ds = pydicom.dcmread(path, force=True, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise DicomReadError(f"{path}: not a DICOM file (no 'DICM' marker and no readable header: "
                             f"{type(e).__name__}); leave it out of the export") from e
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        raise DicomReadError(f"{path}: gzip-compressed file, not plain DICOM; decompress it (gunzip) first")
    if not any(k in ds for k in ("SOPClassUID", "Rows", "StudyInstanceUID", "SeriesInstanceUID")):
        raise DicomReadError(f"{path}: not a DICOM file (no 'DICM' marker and no DICOM identifiers); "
                             "leave it out of the export")
    return ds


def _check_pixel_data(path: Path, ds: Dataset, header: SliceHeader) -> None:
    """Catch files without pixel data, or cut short inside it, from the deferred pixel data element."""
    raw = next((ds.get_item(tag, keep_deferred=True) for tag in PIXEL_DATA_TAGS if tag in ds), None)
    if raw is None:
        raise NotAnImageError(f"{path}: {UID(_sop_class(ds)).name or 'object'} without pixel data; not an image, "
                              "skipped")
    length, offset = getattr(raw, "length", None), getattr(raw, "value_tell", None)
    if length is None or offset is None or length == 0xFFFFFFFF:
        return  # encapsulated (compressed) data: checked when decoded
    size = os.path.getsize(path)
    if offset + length > size:
        raise DicomReadError(f"{path}: truncated: the pixel data should end at byte {offset + length} but the file "
                             f"has {size} bytes; re-export it")
    syntax = UID(header.transfer_syntax) if header.transfer_syntax else None
    if syntax is not None and (syntax.is_compressed or syntax.is_deflated):
        return
    expected = (header.rows * header.cols * header.number_of_frames * header.samples_per_pixel
                * max(header.bits_allocated, 1) + 7) // 8
    if raw.tag == PIXEL_DATA_TAGS[0] and length < expected:
        raise DicomReadError(f"{path}: pixel data holds {length} bytes but {header.rows}x{header.cols}x"
                             f"{header.number_of_frames} frames of {header.bits_allocated} bits need {expected}; "
                             "the file is damaged: re-export it")


def read_header(path: str | Path) -> SliceHeader:
    """Read the header of one DICOM file (no pixel data) into a :class:`SliceHeader`.

    Args:
        path: a DICOM file.

    Returns:
        The header.

    Raises:
        NotAnImageError: a valid DICOM object that holds no image (SR, RTSTRUCT, presentation
            state, DICOMDIR, ...); the message says what it is.
        DicomReadError: not DICOM, damaged or truncated; the message names the file and reason.
    """
    path = Path(path)
    ds = read_dataset(path)
    header = header_from_dataset(ds, path)
    _check_pixel_data(path, ds, header)
    return header


def header_from_dataset(ds: Dataset, path: str | Path) -> SliceHeader:
    """Build a :class:`SliceHeader` from a dataset already read (header-only or complete).

    Raises:
        NotAnImageError: the dataset holds no image.
        DicomReadError: an image object without a matrix (damaged).
    """
    path = Path(path)
    _check_image(ds, _sop_class(ds), path)
    v = _values(ds)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "")) if meta is not None else ""
    if not transfer_syntax:
        implicit = getattr(ds, "original_encoding", (None, None))[0]
        transfer_syntax = "1.2.840.10008.1.2" if implicit in (True, None) else "1.2.840.10008.1.2.1"
    return SliceHeader(**_fields(v, path, transfer_syntax, ds))


def header_fields(values: Mapping[str, Any], path: str | Path, *, transfer_syntax: str,
                  media_sop_class: str = "") -> dict[str, Any]:
    """The fields of the :class:`SliceHeader` of plain header values (keyword -> value, as pydicom gives them).

    ``SliceHeader(**header_fields(...))`` equals :func:`header_from_dataset` of the same file;
    the dict lets a caller replace fields (pseudonymise) before building the header once. Siemens
    mosaic details (which need the private CSA header) are left out.

    Args:
        values: header values by keyword (e.g. :attr:`transforms.dicom.raw.ParsedFile.values`).
        path: the file.
        transfer_syntax: the file meta's TransferSyntaxUID.
        media_sop_class: the file meta's MediaStorageSOPClassUID (used when SOPClassUID is absent).

    Raises:
        NotAnImageError: the values describe no image.
        DicomReadError: an image object without a matrix (damaged).
    """
    path = os.fspath(path)
    _check_image(values, str(values.get("SOPClassUID", "") or media_sop_class), path)
    return _fields(values, path, transfer_syntax, None)


def header_from_values(values: Mapping[str, Any], path: str | Path, *, transfer_syntax: str,
                       media_sop_class: str = "") -> SliceHeader:
    """:func:`header_fields` as a :class:`SliceHeader`."""
    return header_from_fields(header_fields(values, path, transfer_syntax=transfer_syntax,
                                            media_sop_class=media_sop_class))


_FIELD_NAMES = frozenset(SliceHeader.__dataclass_fields__)


def header_from_fields(fields: Mapping[str, Any]) -> SliceHeader:
    """``SliceHeader(**fields)`` for a complete set of fields (as :func:`header_fields` gives), without
    the dataclass ``__init__`` (a tenth of its time: scanning builds one header per file).
    """
    if fields.keys() != _FIELD_NAMES:
        return SliceHeader(**fields)  # missing or unknown fields: let the dataclass say which
    header = object.__new__(SliceHeader)
    object.__setattr__(header, "__dict__", dict(fields))
    return header


def _fields(v: Mapping[str, Any], path: str | Path, transfer_syntax: str, ds: Dataset | None) -> dict[str, Any]:
    image_type = tuple(str(x).upper() for x in (v.get("ImageType") or ()))
    if isinstance(v.get("ImageType"), str):
        image_type = tuple(v["ImageType"].upper().split("\\"))
    frames = _frame_infos(v)
    first = frames[0] if frames else None
    pixel_spacing = _floats(v.get("PixelSpacing"), 2) or (first.pixel_spacing if first else None)
    pixel_spacing = pixel_spacing or _floats(v.get("ImagerPixelSpacing"), 2)
    shared_measures = _first_item(_first_item(v, "SharedFunctionalGroupsSequence"), "PixelMeasuresSequence")
    slice_thickness = _float(v.get("SliceThickness"))
    if slice_thickness is None and shared_measures is not None:
        slice_thickness = _float(shared_measures.get("SliceThickness"))
    is_mosaic = "MOSAIC" in image_type
    mosaic_count, mosaic_normal = _mosaic_info(ds) if is_mosaic and ds is not None else (None, None)
    return dict(
        path=str(path),
        sop_class_uid=str(v.get("SOPClassUID", "")),
        modality=_str(v, "Modality").upper(),
        study_uid=str(v.get("StudyInstanceUID", "")),
        series_uid=str(v.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(v.get("FrameOfReferenceUID", "")),
        patient_id=_str(v, "PatientID"),
        patient_name=_str(v, "PatientName"),
        patient_birth_date=_str(v, "PatientBirthDate"),
        patient_sex=_str(v, "PatientSex"),
        patient_age=_str(v, "PatientAge"),
        accession_number=_str(v, "AccessionNumber"),
        study_date=_str(v, "StudyDate"),
        study_description=_str(v, "StudyDescription"),
        series_number=_int(v.get("SeriesNumber")),
        series_description=_str(v, "SeriesDescription"),
        protocol_name=_str(v, "ProtocolName"),
        manufacturer=_str(v, "Manufacturer"),
        model=_str(v, "ManufacturerModelName"),
        institution=_str(v, "InstitutionName"),
        body_part=_str(v, "BodyPartExamined"),
        image_type=image_type,
        rows=int(v["Rows"]),
        cols=int(v["Columns"]),
        pixel_spacing=pixel_spacing,
        orientation=_floats(v.get("ImageOrientationPatient"), 6) or (first.orientation if first else None),
        slice_thickness=slice_thickness,
        spacing_between_slices=_float(v.get("SpacingBetweenSlices")),
        repetition_time=_float(v.get("RepetitionTime")),
        inversion_time=_float(v.get("InversionTime")),
        flip_angle=_float(v.get("FlipAngle")),
        field_strength=_float(v.get("MagneticFieldStrength")),
        n_temporal_positions=_int(v.get("NumberOfTemporalPositions")),
        number_of_frames=_int(v.get("NumberOfFrames")) or 1,
        transfer_syntax=transfer_syntax,
        photometric=_str(v, "PhotometricInterpretation").upper(),
        samples_per_pixel=_int(v.get("SamplesPerPixel")) or 1,
        bits_allocated=_int(v.get("BitsAllocated")) or 0,
        bits_stored=_int(v.get("BitsStored")) or 0,
        pixel_representation=_int(v.get("PixelRepresentation")) or 0,
        gantry_tilt=_float(v.get("GantryDetectorTilt")) or 0.0,
        convolution_kernel=_str(v, "ConvolutionKernel"),
        kvp=_float(v.get("KVP")),
        view_position=_str(v, "ViewPosition"),
        is_mosaic=is_mosaic,
        mosaic_count=mosaic_count,
        mosaic_normal=mosaic_normal,
        frame_offsets=_floats(v.get("GridFrameOffsetVector"), _int(v.get("NumberOfFrames")) or 1),
        frames=frames,
        **_per_file_fields(v, first),
    )


# Header values that differ between the files of one series (or may: PET rescales each slice);
# every other value a series' files share. SliceLocation is read but used by no field.
PER_FILE_KEYWORDS = ("SOPInstanceUID", "ImagePositionPatient", "SliceLocation", "InstanceNumber", "EchoNumbers",
                     "EchoTime", "AcquisitionNumber", "AcquisitionTime", "ContentTime", "TemporalPositionIdentifier",
                     "TriggerTime", "RescaleSlope", "RescaleIntercept")


def _per_file_fields(v: Mapping[str, Any], first: FrameInfo | None) -> dict[str, Any]:
    """The fields computed from :data:`PER_FILE_KEYWORDS` (and the first frame's, shared), and from nothing else."""
    return dict(
        sop_instance_uid=str(v.get("SOPInstanceUID", "")),
        position=_floats(v.get("ImagePositionPatient"), 3) or (first.position if first else None),
        instance_number=_int(v.get("InstanceNumber")),
        echo_number=_int(v.get("EchoNumbers")),
        echo_time=_float(v.get("EchoTime")),
        acquisition_number=_int(v.get("AcquisitionNumber")),
        acquisition_time=_str(v, "AcquisitionTime") or _str(v, "ContentTime"),
        temporal_position=_int(v.get("TemporalPositionIdentifier")),
        trigger_time=_float(v.get("TriggerTime")),
        slope=_float(v.get("RescaleSlope")) or (first.slope if first else 1.0),
        intercept=_float(v.get("RescaleIntercept")) or (first.intercept if first else 0.0),
    )


def header_fields_like(values: Mapping[str, Any], path: str | Path, like: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`header_fields` of a file whose values other than :data:`PER_FILE_KEYWORDS` (and whose transfer
    syntax and media SOP class) equal those of the file whose fields are ``like``: only the per-file fields
    are computed (the files of a series share the rest, so a scan computes it once per series).
    """
    fields = dict(like)
    frames = like["frames"]
    fields.update(_per_file_fields(values, frames[0] if frames else None))
    fields["path"] = str(path)
    return fields
