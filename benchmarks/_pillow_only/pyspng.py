"""Shadows the real pyspng for the end-to-end benchmark's `local-pillow` variant (this
folder goes first on its PYTHONPATH): thumbnails then decode every PNG with Pillow, as
before libspng, so the two decoders are compared in the same paired rounds."""

raise ImportError("pyspng hidden by benchmarks/_pillow_only (the local-pillow variant)")
