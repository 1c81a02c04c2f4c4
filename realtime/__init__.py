"""The server-sent-events relay: one Redis subscription per process fanned out to SSE streams (see `realtime.app`)."""
