"""Fixtures of this package's tests: a real Orthanc PACS (see tests/orthanc_server.py)."""
from orthanc_server import orthanc  # noqa: F401 - registers the fixture
