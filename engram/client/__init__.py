"""engram's Python client: both API families, sync (`Client`) and async (`AsyncClient`).

The public names are re-exported from `engram` itself (`from engram import Client`).
Modules whose names start with an underscore are private and may change at any time.
"""

from engram.client._async import AsyncClient, AsyncJobs, AsyncMemories
from engram.client._sync import Client, Jobs, Memories
from engram.client.errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    EngramError,
    NotFoundError,
    PermissionDeniedError,
    PollTimeoutError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from engram.client.models import (
    ArtifactDetails,
    EpisodeDetails,
    Event,
    FactDetails,
    Health,
    IngestJob,
    IngestResponse,
    IngestResult,
    JobError,
    Memory,
    MemoryRef,
    Message,
    SearchExtras,
    SearchResponse,
    SearchResult,
    SearchResults,
    SourceEvent,
    StatusResponse,
)

__all__ = [
    # clients
    "AsyncClient", "AsyncJobs", "AsyncMemories", "Client", "Jobs", "Memories",
    # errors
    "APIConnectionError", "APIStatusError", "AuthenticationError", "BadRequestError", "EngramError",
    "NotFoundError", "PermissionDeniedError", "PollTimeoutError", "RateLimitError", "ServerError",
    "ValidationError",
    # models
    "ArtifactDetails", "EpisodeDetails", "Event", "FactDetails", "Health", "IngestJob", "IngestResponse",
    "IngestResult", "JobError", "Memory", "MemoryRef", "Message", "SearchExtras", "SearchResponse",
    "SearchResult", "SearchResults", "SourceEvent", "StatusResponse",
]
