"""Talking to OpenAI-compatible model servers, for the `llm` extractor and the `openai` embedder.

- `engram.llm.provider`: the `openai` client wrapper, its retry policy and `ProviderError`;
- `engram.llm.usage`: the per-job usage meter and the token estimate used for chunking.

Import the submodules directly: `engram.llm.usage` must stay cheap to import (the
pipeline meters every job), while `provider` loads the `openai` package.
"""
