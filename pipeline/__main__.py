"""``python -m pipeline`` runs the ``radpipe`` command."""
from __future__ import annotations

from pipeline.cli import run

if __name__ == "__main__":
    run()
