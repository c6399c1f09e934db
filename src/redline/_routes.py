"""What redline's ASGI middlewares tell each other about routing, through the ASGI scope.

``ROUTE_TEMPLATE_KEY``: the full route template (``/funds/{fund_id}``) of a request that
``redline.http.HTTPCacheMiddleware`` matched before the app ran. A 304 answered by a validator
or a response-cache hit never reaches the app's router, which is what normally leaves the
route in the scope, so ``redline.monitor.MetricsMiddleware`` (outside it) labels such requests
by this key instead of ``<unmatched>``. Extension keys hold the package name, as the ASGI spec
asks of keys outside it.
"""

ROUTE_TEMPLATE_KEY = "redline.route_template"
