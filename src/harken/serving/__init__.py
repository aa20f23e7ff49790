"""Serving: the HTTP/WebSocket server, cross-stream batching, background jobs, resumable
batch jobs over folders and manifests."""
