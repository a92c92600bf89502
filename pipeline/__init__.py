"""radpipe: hospital DICOM exports to validated, transfer-learned models (the stages a researcher runs)."""
from __future__ import annotations

__version__ = "0.1.0"
