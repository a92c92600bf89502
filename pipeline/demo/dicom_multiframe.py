"""The Enhanced CT/MR form of a synthetic series: one file, functional groups instead of per-slice tags."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from pipeline.demo.dicom_dataset import STUDY_DATE, STUDY_TIME, make_uid
from pipeline.demo.dicom_pixels import set_pixels
from pipeline.demo.dicom_spec import ResolvedSeries

_STACK_ID = 0x00209056
_IN_STACK_POSITION_NUMBER = 0x00209057
_TEMPORAL_POSITION_INDEX = 0x00209128
_FRAME_CONTENT_SEQUENCE = 0x00209111


def set_enhanced_attrs(ds: Dataset, series: ResolvedSeries) -> None:
    """Complete ``ds`` (base and image tags set) as an Enhanced CT/MR image holding every frame of ``series``.

    Sets the dimension index, the shared and per-frame functional groups and the pixel data; frames go
    in InstanceNumber order, time point by time point.
    """
    spec = series.spec
    n_timepoints = series.data.shape[0]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.ContentTime = STUDY_TIME.strftime("%H%M%S")
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME.strftime("%H%M%S")
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY" if spec.photometric == "MONOCHROME2" else "INVERSE"
    ds.VolumetricProperties = "VOLUME"
    _set_dimensions(ds, temporal=n_timepoints > 1)
    ds.SharedFunctionalGroupsSequence = DicomSequence([_shared_groups(ds, series)])
    per_frame, frames = _per_frame_groups(series)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.NumberOfFrames = len(frames)
    if spec.repetition_time is not None and n_timepoints > 1:
        ds.RepetitionTime = spec.repetition_time
    set_pixels(ds, np.stack(frames), series.files.transfer_syntax, spec.photometric)


def _set_dimensions(ds: Dataset, *, temporal: bool) -> None:
    """Dimension organization and index: stack, position in stack, and the time point when ``temporal``."""
    dim_org = make_uid("dimorg", ds.SeriesInstanceUID)
    ds.DimensionOrganizationSequence = DicomSequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dim_org
    index_pointers = [_STACK_ID, _IN_STACK_POSITION_NUMBER] + ([_TEMPORAL_POSITION_INDEX] if temporal else [])
    dims = []
    for index_pointer in index_pointers:
        item = Dataset()
        item.DimensionOrganizationUID = dim_org
        item.DimensionIndexPointer = index_pointer
        item.FunctionalGroupPointer = _FRAME_CONTENT_SEQUENCE
        dims.append(item)
    ds.DimensionIndexSequence = DicomSequence(dims)


def _shared_groups(ds: Dataset, series: ResolvedSeries) -> Dataset:
    """Pixel measures, plane orientation and rescale, the same for every frame."""
    spec = series.spec
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [float(v) for v in spec.pixel_spacing]
    measures.SliceThickness = ds.SliceThickness
    shared.PixelMeasuresSequence = DicomSequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [round(float(v), 8) for v in series.cos]
    shared.PlaneOrientationSequence = DicomSequence([plane])
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope = spec.intercept, spec.slope
    transform.RescaleType = "HU" if ds.Modality == "CT" else "US"
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    return shared


def _per_frame_groups(series: ResolvedSeries) -> tuple[list[Dataset], list[np.ndarray]]:
    """Frame content and plane position of every frame, and the frames' stored values, in frame order."""
    n_timepoints = series.data.shape[0]
    spatial_rank = {z: rank for rank, z in enumerate(sorted(series.present))}
    frames, per_frame = [], []
    for t in range(n_timepoints):
        for z in series.present:
            item = Dataset()
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = spatial_rank[z] + 1
            dim_values = [1, spatial_rank[z] + 1]
            if n_timepoints > 1:
                content.TemporalPositionIndex = t + 1
                dim_values.append(t + 1)
            content.DimensionIndexValues = dim_values
            content.FrameAcquisitionNumber = 1
            item.FrameContentSequence = DicomSequence([content])
            position = Dataset()
            position.ImagePositionPatient = [round(float(v), 6) for v in series.positions[z]]
            item.PlanePositionSequence = DicomSequence([position])
            per_frame.append(item)
            frames.append(series.data[t, z])
    return per_frame, frames
