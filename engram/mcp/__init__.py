"""engram over the Model Context Protocol: tools, resources and a prompt for agents
(docs/mcp.md). `server.py` says what they mean; `stdio.py` runs them beside an IDE against a
running engram (`engram mcp`); `http.py` mounts them on `engram serve` at `/mcp`."""
