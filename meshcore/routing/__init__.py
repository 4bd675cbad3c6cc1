"""The router's view of the fleet and its choices, all in process memory.

- `desired`: the desired state the router needs (nodes, runtimes, policies, API tokens),
  read from this replica's database when it changes, never per request
- `table`: one immutable routing table, desired joined with observed state: the routable
  targets of every model and why the others are not
- `view`: keeps the table current (projection hook, live store poll) as a background part
- `balancer`: router-local state per target (in flight, failures, ejection), the retry
  budget, and the strategies that order targets for one request
- `sequences`: Triton sequences stay on the target that holds them
"""
