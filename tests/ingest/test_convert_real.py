"""``radpipe convert`` on a real scanner export (NIH's dcm_qa_nih: GE fMRI and Siemens EPI) against dcm2niix's
reference volumes in ``shared/data/dcm_qa_nih/Ref``: same volumes, voxel for voxel at the same world coordinates.

The export lives beside the repository (``../shared/data``), not in it; without it the test is skipped.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_reference import world_mismatch

from pipeline.ingest.convert import convert_export
from pipeline.pseudonym import Pseudonymiser

NIH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dcm_qa_nih"


@pytest.mark.skipif(not (NIH / "In").is_dir(), reason="shared/data/dcm_qa_nih is not beside the repository")
def test_convert_reproduces_dcm2niix_reference_volumes_of_a_real_export(tmp_path):
    summary = convert_export(NIH / "In", tmp_path / "out", workers=2, pseudonymiser=Pseudonymiser(b"nih-" * 8))
    assert summary.n_failed == 0
    ours = [tmp_path / "out" / r["nifti"] for r in summary.rows]
    references = sorted((NIH / "Ref").glob("*.nii"))
    assert len(ours) == len(references) == 8
    unmatched = list(ours)
    for reference in references:
        theirs = nib.load(reference)
        for path in unmatched:
            mine = nib.load(path)
            if mine.shape != theirs.shape:
                continue
            distance, difference = world_mismatch(np.asarray(mine.get_fdata()), mine.affine, reference)
            if distance < 1e-3 and difference == 0.0:
                unmatched.remove(path)
                break
        else:
            raise AssertionError(f"no volume of ours matches dcm2niix's {reference.name} {theirs.shape}")
