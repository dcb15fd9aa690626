"""The HTTP adapter: what stands between a socket and a call.

- `protocol`: uvicorn's parser, guarded (limits and deadlines before authentication, the
  disconnect watch, HTTP/1.0 streams);
- `body`: reading a request's JSON body within its size, depth and time limits.
"""
