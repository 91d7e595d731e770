"""A blocking HTTP client over `wasi:http/outgoing-handler`, for hooks.

hoist's hooks are synchronous calls, so the client blocks on the host's pollables instead of
running an event loop::

    from hoist_sdk import http
    state = http.get(f"http://{http.host_port(pod.ip, 8080)}/v1/info/state").error_for_status().json()
    http.put(url, json="DRAINING").error_for_status()

The host decides where a request may go (the Scaler's allow-list and the cluster's policy);
a refused request raises `HttpError` naming why. Response bodies are read up to
`MAX_BODY_BYTES`.
"""

import json as _json
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as t

#: Largest response body read (the Rust SDK's limit too).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Default deadline of one request, in milliseconds.
DEFAULT_TIMEOUT_MS = 10_000

_METHODS = {
    "GET": t.Method_Get(),
    "HEAD": t.Method_Head(),
    "POST": t.Method_Post(),
    "PUT": t.Method_Put(),
    "DELETE": t.Method_Delete(),
    "PATCH": t.Method_Patch(),
    "OPTIONS": t.Method_Options(),
}


class HttpError(Exception):
    """A request that could not be sent, or (from `error_for_status`) an error status."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class Response:
    """A received response: status, headers (lowercase names) and body."""

    def __init__(self, url: str, status: int, headers: List[Tuple[str, bytes]], body: bytes):
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        """The first value of header `name`, if any."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("utf-8", "replace")
        return None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise HttpError(f"{self.url}: the body is not JSON: {e}") from None

    def error_for_status(self) -> "Response":
        """This response, or `HttpError` when the status is 400 or more."""
        if self.status >= 400:
            snippet = self.text()[:200]
            raise HttpError(f"{self.url} answered {self.status}: {snippet}", self.status)
        return self


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _describe(error: Any) -> str:
    name = type(error).__name__.removeprefix("ErrorCode_")
    value = getattr(error, "value", None)
    return f"{name}: {value}" if value is not None else name


def _unwrap(call, what: str):
    """Runs a binding call that raises `Err(value)`, as an `HttpError`."""
    try:
        return call()
    except Err as e:
        raise HttpError(f"{what}: {_describe(e.value)}") from None


def request(
    method: str,
    url: str,
    *,
    headers: Optional[Dict[str, str]] = None,
    body: Optional[bytes] = None,
    json: Any = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Response:
    """Sends one request and reads the whole response (up to `MAX_BODY_BYTES`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpError(f"{url!r} is not an http(s) URL")
    entries = [(k.lower(), v.encode()) for k, v in (headers or {}).items()]
    if json is not None:
        body = _json.dumps(json).encode()
        entries.append(("content-type", b"application/json"))
    if isinstance(body, str):
        body = body.encode()
    # Always state the body's length: servers that do not take chunked request bodies then
    # read exactly the body (as the Rust SDK does).
    if body or method.upper() in ("PUT", "POST", "PATCH"):
        entries.append(("content-length", str(len(body or b"")).encode()))
    fields = _unwrap(lambda: t.Fields.from_list(entries), f"{url}: headers")
    outgoing = t.OutgoingRequest(fields)
    if method.upper() not in _METHODS:
        raise HttpError(f"{method!r} is not a supported method")
    outgoing.set_method(_METHODS[method.upper()])
    outgoing.set_scheme(t.Scheme_Https() if parts.scheme == "https" else t.Scheme_Http())
    outgoing.set_authority(parts.netloc)
    path = parts.path or "/"
    outgoing.set_path_with_query(path + (f"?{parts.query}" if parts.query else ""))
    options = t.RequestOptions()
    nanos = timeout_ms * 1_000_000
    options.set_connect_timeout(nanos)
    options.set_first_byte_timeout(nanos)
    options.set_between_bytes_timeout(nanos)
    outgoing_body = outgoing.body()
    future = _unwrap(lambda: outgoing_handler.handle(outgoing, options), url)
    if body:
        with _unwrap(outgoing_body.write, f"{url}: sending the body") as stream:
            for start in range(0, len(body), 4096):
                chunk = body[start : start + 4096]
                _unwrap(lambda: stream.blocking_write_and_flush(chunk), f"{url}: sending the body")
    _unwrap(lambda: t.OutgoingBody.finish(outgoing_body, None), f"{url}: finishing the body")
    with future.subscribe() as ready:
        ready.block()
    answer = future.get()
    if answer is None or isinstance(answer, Err):
        raise HttpError(f"{url}: no response")
    inner = answer.value
    if isinstance(inner, Err):
        raise HttpError(f"{url}: {_describe(inner.value)}")
    response = inner.value
    status = response.status()
    with response.headers() as h:
        received = h.entries()
    incoming = _unwrap(response.consume, f"{url}: reading the body")
    data = bytearray()
    with _unwrap(incoming.stream, f"{url}: reading the body") as stream:
        while True:
            try:
                chunk = stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise HttpError(f"{url}: reading the body: {_describe(e.value)}") from None
            data.extend(chunk)
            if len(data) > MAX_BODY_BYTES:
                raise HttpError(f"{url}: the body is longer than {MAX_BODY_BYTES} bytes")
    return Response(url, status, received, bytes(data))


def get(url: str, **kwargs) -> Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs) -> Response:
    return request("POST", url, **kwargs)


def put(url: str, **kwargs) -> Response:
    return request("PUT", url, **kwargs)


def delete(url: str, **kwargs) -> Response:
    return request("DELETE", url, **kwargs)
