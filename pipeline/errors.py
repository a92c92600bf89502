"""Errors raised by radpipe.

Every error a user can cause derives from :class:`PipelineError` and from the
builtin that best describes it, so callers may catch either. Messages say what
was expected, what was found, where, and how to fix it; the CLI prints them on
one line and exits with status 2.
"""
from __future__ import annotations

from collections.abc import Sequence

MAX_SHOWN_PROBLEMS = 20


class PipelineError(Exception):
    """Base class of every error radpipe raises on bad input or configuration."""


class ConfigError(PipelineError, ValueError):
    """A configuration key or value is unknown or invalid."""


class ManifestError(PipelineError, ValueError):
    """A manifest (CSV) is malformed or inconsistent."""


class DicomReadError(PipelineError, OSError):
    """A DICOM file or series cannot be read or assembled."""


class NotAnImageError(DicomReadError):
    """A valid DICOM file that holds no image (SR, RTSTRUCT, presentation state, DICOMDIR, no pixel data)."""


class ImageReadError(PipelineError, OSError):
    """A non-DICOM image file (NIfTI, NRRD, MHA) cannot be read."""


class UnknownModelError(PipelineError, KeyError):
    """A backbone name is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WeightsError(PipelineError, ValueError):
    """Pretrained weights cannot be found, read or mapped onto the model."""


class RunError(PipelineError, ValueError):
    """A run directory is missing files or is inconsistent."""


def format_problems(problems: Sequence[str], limit: int = MAX_SHOWN_PROBLEMS) -> str:
    """Join problems into one message: the first ``limit`` of them plus a count of the rest.

    Args:
        problems: human-readable problem descriptions.
        limit: how many to show.

    Returns:
        A single string, problems separated by ``"; "``.
    """
    shown = "; ".join(problems[:limit])
    rest = len(problems) - limit
    if rest > 0:
        shown += f"; ... and {rest} more"
    return f"{len(problems)} problem(s): {shown}"
