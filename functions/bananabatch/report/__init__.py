"""What a finished job shows its user: thumbnails and a self-contained gallery page."""
