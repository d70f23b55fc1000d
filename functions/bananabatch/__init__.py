"""bananabatch: bulk image generation on the Gemini Batch API."""
