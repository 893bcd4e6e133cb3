"""engram: a self-hostable long-term memory service for AI agents."""

__version__ = "0.1.0"

# The Python client's public names (engram/client/__init__.py), importable from `engram`.
# They load on first use, so server and worker processes never import the client.
_CLIENT_NAMES = frozenset({
    "AsyncClient", "AsyncJobs", "AsyncMemories", "Client", "Jobs", "Memories",
    "APIConnectionError", "APIStatusError", "AuthenticationError", "BadRequestError", "EngramError",
    "NotFoundError", "PermissionDeniedError", "PollTimeoutError", "RateLimitError", "ServerError",
    "ValidationError",
    "ArtifactDetails", "EpisodeDetails", "Event", "FactDetails", "Health", "IngestJob", "IngestResponse",
    "IngestResult", "JobError", "Memory", "MemoryRef", "Message", "SearchExtras", "SearchResponse",
    "SearchResult", "SearchResults", "SourceEvent", "StatusResponse",
})


def __getattr__(name: str) -> object:
    if name in _CLIENT_NAMES:
        from engram import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engram' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLIENT_NAMES})
