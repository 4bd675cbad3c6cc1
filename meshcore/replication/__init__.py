"""Desired state, replicated: a Raft log (PySyncObj) whose committed batches every replica projects.

- `desired`: the state machine the log drives (items per kind, uniqueness, references, versions)
- `raft`: the replica (PySyncObj), its timing, membership and status
- `proposals`, `projector`: batching writes into log entries; writing committed ones to the database
- `projection`: committed changes into this replica's tables, then the hooks (`hooks`) above it
- `rows`: the few SQL statements the projection needs, built once
- `log`: which log this process writes to (its replica, a local log in tests, or a command's)
- `control`: the Unix socket through which management commands reach the running replica
- `cipher`, `framing`: the Raft port's encryption and message framing

It imports nothing above it (events, live state, routing): `hooks` is how it tells them.
The kinds it replicates are in `meshcore.kinds`.
"""
