"""The header of one DICOM file as grouping, geometry and ``radpipe scan`` see it: :class:`SliceHeader`.

Enhanced (multi-frame) files carry one :class:`FrameInfo` per frame from their functional groups.
Identifiers (patient name, ID, birth date, accession number) are kept so that the *caller* can
pseudonymise them; never write them out in clear. The fields are computed by
:mod:`transforms.dicom.fields` (from header values) and :mod:`transforms.dicom.headers` (from a
pydicom ``Dataset``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    ``pixel_offset`` is where the pixel data's value starts in the file, set only when the byte reader read the
    header and the pixels are native little endian of a known length (convert then reads them without parsing the
    header again); it takes no part in comparisons.
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
    philips_scale_slope: float | None = None
    diffusion_b_value: float | None = None
    diffusion_gradient: Vec3 | None = None
    pixel_offset: int | None = field(default=None, compare=False)

    @property
    def is_multiframe(self) -> bool:
        """True for files with more than one frame (enhanced or legacy multi-frame)."""
        return self.number_of_frames > 1 or bool(self.frames)

    @property
    def is_localizer(self) -> bool:
        """True for scout / localizer images (ImageType LOCALIZER)."""
        return "LOCALIZER" in self.image_type


_FIELD_NAMES = frozenset(SliceHeader.__dataclass_fields__)


def header_from_fields(fields: Mapping[str, Any]) -> SliceHeader:
    """``SliceHeader(**fields)`` for a complete set of fields, without the dataclass ``__init__``.

    Skipping ``__init__`` saves a tenth of the time: scanning builds one header per file.

    Args:
        fields: every :class:`SliceHeader` field by name (as :func:`~transforms.dicom.fields.header_fields`
            gives them); the header keeps its own copy.

    Returns:
        The header.

    Raises:
        TypeError: missing or unknown fields (from the dataclass, which names them).
    """
    if fields.keys() != _FIELD_NAMES:
        return SliceHeader(**fields)  # missing or unknown fields: let the dataclass say which
    header = object.__new__(SliceHeader)
    object.__setattr__(header, "__dict__", dict(fields))
    return header
