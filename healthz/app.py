"""The health application, built once per listener.

The same routes serve both faces; what differs is decided here and only here: the public (TCP)
face is read-only and withholds reasons, the private (unix socket) face tells reasons and
mounts the /v1 control routes.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from healthz.control import ControlRoutes, json_errors
from healthz.eventfeed import EventFeed
from healthz.kube import KubeFaces
from healthz.metrics_deferred import Metrics
from healthz.model import Pod
from healthz.proctree import ProcessTree
from healthz.run_request import MAX_BODY

# Nothing legitimate sends a body bigger than this: the verbs take their arguments in the
# query string, and only `podctl run` sends a body (a command line and its environment).
# aiohttp refuses larger bodies with 413 before a handler reads them.
CLIENT_MAX_SIZE = MAX_BODY

# Beyond this the engine's loop is too slow to supervise anything: /livez fails and the
# kubelet replaces the container. A loop stuck outright cannot answer at all.
DEFAULT_LAG_LIMIT = 5.0

_READ_ONLY = frozenset({"GET", "HEAD"})


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse every method but GET and HEAD, on every path, before any route is consulted."""
    if request.method not in _READ_ONLY:
        raise web.HTTPMethodNotAllowed(request.method, sorted(_READ_ONLY))
    return await handler(request)


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # The default names the Python and aiohttp versions: of no use to a prober, of some to
    # whoever scans the pod network.
    response.headers["Server"] = "coditect-pod"


def make_app(
    pod: Pod,
    *,
    metrics: Metrics,
    private: bool,
    lag_limit: float = DEFAULT_LAG_LIMIT,
    tree: ProcessTree | None = None,
    feed: EventFeed | None = None,
) -> web.Application:
    """The app for one listener: `private=True` for the unix socket, False for TCP."""
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[json_errors] if private else [read_only],
    )
    app.on_response_prepare.append(_plain_server_header)
    KubeFaces(pod, metrics, private=private, lag_limit=lag_limit).add_routes(app)
    if private:
        ControlRoutes(pod, tree or ProcessTree(), lag_limit=lag_limit,
                      feed=feed or EventFeed()).add_routes(app)
    return app
