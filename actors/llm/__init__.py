"""The ``llm`` actor template: one model call per message, set up by config (README.md)."""
