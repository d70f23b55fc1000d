"""The Pulumi program for bananabatch, as a reusable ComponentResource.

The program reads environment variable names and defaults from the deployed package
(`bananabatch.config`) instead of copying them, so a rename on the application side cannot
leave the infrastructure setting a name nobody reads. `bananabatch` lives in `functions/`,
which is not installed in the Pulumi virtualenv, so that folder is put on the import path.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = REPO_ROOT / "functions"

# Appended, not prepended: an installed bananabatch (the dev venv) is the same source and wins.
if str(FUNCTIONS_DIR) not in sys.path:
    sys.path.append(str(FUNCTIONS_DIR))
