"""Checking many image files: one thread for local files, a pool only when files wait on storage."""
from __future__ import annotations

import threading
import time

import nibabel as nib
import numpy as np

import pipeline.manifest.image_files as image_files


def _nifti_files(folder, n):
    folder.mkdir()
    paths = []
    for i in range(n):
        path = folder / f"case{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((8, 8, 1), i, dtype=np.uint8), np.eye(4)), str(path))
        paths.append(str(path))
    return paths


def test_local_files_are_checked_in_order_in_one_thread(tmp_path, monkeypatch):
    paths = _nifti_files(tmp_path / "img", 40)
    paths[35] = str(tmp_path / "img" / "missing.nii.gz")
    (tmp_path / "img" / "empty.nii.gz").write_bytes(b"")
    paths[3] = str(tmp_path / "img" / "empty.nii.gz")
    real = image_files.image_file_problem
    threads = set()

    def recording(path, deep=False):
        threads.add(threading.get_ident())
        return real(path, deep)

    monkeypatch.setattr(image_files, "image_file_problem", recording)
    monkeypatch.setattr(image_files, "SLOW_FILE_S", 0.05)  # local files take ~1 ms: room for a busy test machine
    found = image_files.image_file_problems(paths)
    assert threads == {threading.get_ident()}
    assert [i for i, p in enumerate(found) if p] == [3, 35]
    assert found[3].startswith("file is empty") and found[35].startswith("file not found")


def test_files_that_wait_on_storage_go_to_a_thread_pool(tmp_path, monkeypatch):
    paths = [f"share/case{i}.nii.gz" for i in range(image_files.PROBE_FILES + 40)]
    threads = set()

    def slow(path, deep=False):  # a network share: each file waits on the storage
        threads.add(threading.get_ident())
        time.sleep(image_files.SLOW_FILE_S * 1.5)
        return None if path != paths[-1] else f"file not found: {path}"

    monkeypatch.setattr(image_files, "image_file_problem", slow)
    found = image_files.image_file_problems(paths, workers=4)
    assert len(threads) > 1 and threading.get_ident() in threads
    assert found[:-1] == [None] * (len(paths) - 1) and found[-1] == f"file not found: {paths[-1]}"
