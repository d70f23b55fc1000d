"""What every emulator of this package shares: the loopback server (`server`), the webhook
outbox with its faults (`outbox`) and the state's clock, ledger of accepted (paid) requests
and clock-driven lifecycle of submitted work (`state`). The Gemini, OpenAI Batch,
OpenAI-compatible images and Replicate emulators build on these; each keeps only what its
own protocol says."""
