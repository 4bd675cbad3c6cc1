"""Observed state: what agents report about the fleet, kept live and never replicated.

- `reports`: validating an agent's report (field errors, no Django forms on the hot path)
- `store`: the live state store, Redis when `REDIS_URL` is set, process memory otherwise
- `node_auth`: node tokens checked against a short-lived in-process cache
- `ingest`: one report into the store, noticing what changed slowly (inventory, models, health)
- `mirror`: slow changes into the database and the event stream, off the request path; runtime
  discovery (a runtime an agent reports that nobody registered, `MESH_RUNTIME_DISCOVERY`)
- `health`: the sweeper that marks silent nodes unhealthy
- `publisher`: telemetry updates to the channel layer, batched
- `asgi`: the lean HTTP path for `POST /api/v1/telemetry/`
- `readers`: the store read for the API (and the router and the dashboard)
- `parts`: this process's telemetry parts, made once
"""
