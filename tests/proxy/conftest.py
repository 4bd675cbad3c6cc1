from tests.proxy.support import client, close_upstream_sessions, router, tritons, view  # noqa: F401  (fixtures)
