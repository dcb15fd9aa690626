"""One API call: the core (`call.Call`, with its streamed half in `streams`) and what every
call shares (`gateway.Gateway`). The HTTP adapter around it is `meridian.http.api`."""

from meridian.calls.call import Call
from meridian.calls.gateway import Gateway, new_request_id
from meridian.calls.streams import Answer, Streamed

__all__ = ["Answer", "Call", "Gateway", "Streamed", "new_request_id"]
