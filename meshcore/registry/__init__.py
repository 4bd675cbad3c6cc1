"""The one way to change desired state: nodes, models, runtimes, policies, tokens and identity.

The admin, the REST API and management commands all call these functions; none of them
writes those tables. Each function validates its input, turns the change into a batch
of plain operations and commits it through the replicated log (`meshcore.replication`):
the call returns once a quorum of replicas committed the batch and this replica's
database applied it, so the caller reads its own write. Version checks (optimistic
concurrency), uniqueness and references are decided when the batch applies, identically
on every replica; a refusal is then explained from this replica's rows where they show
what was refused. Errors are `RegistryError`s that say what to do, mapped to HTTP
statuses by the API and to messages by the admin.

- `committing`: the batch, its idempotency key and actor, the errors
- `fleet`: nodes, their agent tokens and drain, runtimes
- `catalog`: models
- `policies`: policies
- `access`: API tokens, users, groups
- `backup`: export and restore of the whole desired state
"""

from meshcore.registry.access import (
    delete_group,
    delete_groups,
    delete_user,
    delete_users,
    issue_api_token,
    revoke_api_token,
    revoke_api_tokens,
    save_group,
    save_user,
    set_user_groups,
)
from meshcore.registry.backup import (
    export_state,
    restore_state,
)
from meshcore.registry.catalog import (
    MAX_CONFIG_DEPTH,
    MODEL_FIELDS,
    create_model,
    delete_model,
    delete_models,
    update_model,
)
from meshcore.registry.committing import (
    Actor,
    Change,
    Conflict,
    Explain,
    InvalidChange,
    NotFound,
    RegistryError,
    RequestIdempotencyKey,
    Unavailable,
    acting,
    acting_as,
    actor_id,
    actor_name,
    as_committed,
    assign_changes,
    batch_key,
    check_version,
    commit,
    commit_all,
    created_id,
    event_spec,
    full_clean,
    get_row,
    idempotency_key,
    item_data,
    plain_value,
    refuse_duplicate,
    update_op,
)
from meshcore.registry.fleet import (
    NODE_FIELDS,
    RUNTIME_FIELDS,
    create_node,
    create_runtime,
    delete_node,
    delete_nodes,
    delete_runtime,
    delete_runtimes,
    register_discovered_runtime,
    revoke_node_token,
    rotate_node_token,
    set_node_draining,
    update_node,
    update_runtime,
)
from meshcore.registry.policies import (
    POLICY_FIELDS,
    create_policy,
    delete_policies,
    delete_policy,
    update_policy,
)

__all__ = [
    "MAX_CONFIG_DEPTH",
    "MODEL_FIELDS",
    "NODE_FIELDS",
    "POLICY_FIELDS",
    "RUNTIME_FIELDS",
    "Actor",
    "Change",
    "Conflict",
    "Explain",
    "InvalidChange",
    "NotFound",
    "RegistryError",
    "RequestIdempotencyKey",
    "Unavailable",
    "acting",
    "acting_as",
    "actor_id",
    "actor_name",
    "as_committed",
    "assign_changes",
    "batch_key",
    "check_version",
    "commit",
    "commit_all",
    "create_model",
    "create_node",
    "create_policy",
    "create_runtime",
    "created_id",
    "delete_group",
    "delete_groups",
    "delete_model",
    "delete_models",
    "delete_node",
    "delete_nodes",
    "delete_policies",
    "delete_policy",
    "delete_runtime",
    "delete_runtimes",
    "delete_user",
    "delete_users",
    "event_spec",
    "export_state",
    "full_clean",
    "get_row",
    "idempotency_key",
    "issue_api_token",
    "item_data",
    "plain_value",
    "refuse_duplicate",
    "register_discovered_runtime",
    "restore_state",
    "revoke_api_token",
    "revoke_api_tokens",
    "revoke_node_token",
    "rotate_node_token",
    "save_group",
    "save_user",
    "set_node_draining",
    "set_user_groups",
    "update_model",
    "update_node",
    "update_op",
    "update_policy",
    "update_runtime",
]
