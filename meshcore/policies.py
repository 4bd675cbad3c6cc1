"""How policies combine (docs/policies.md says the same in prose).

- `acl`: an explicit deny that matches wins; otherwise an allow that matches permits;
  with no matching ACL at all, the request is allowed only when no enabled ACL names
  the model (a model nobody restricted stays open).
- `pin` and `load_balancing`: among enabled policies that match the model, the one with
  the highest priority applies; ties go to the policy named first alphabetically, so
  every replica and router picks the same one.
- `quota`: the same rule within each scope (global, tenant, model), and the winners of
  all scopes apply together: a request must fit the global, its tenant's and its
  model's quota.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from meshcore.models import Policy, PolicyKind

WILDCARD = "*"


@dataclass(frozen=True)
class Subject:
    """Who is asking: a user, their groups (tenants) and the token they used."""

    username: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    token_name: str | None = None


def _names_model(names: Iterable[str], model: str) -> bool:
    return WILDCARD in names or model in names


def _acl_matches_subject(spec: dict, subject: Subject) -> bool:
    subjects = spec["subjects"]
    return (
        (subject.username is not None and subject.username in subjects.get("users", []))
        or bool(subject.groups & set(subjects.get("groups", [])))
        or (subject.token_name is not None and subject.token_name in subjects.get("tokens", []))
    )


def acl_allows(policies: Iterable[Policy], subject: Subject, model: str, action: str) -> bool:
    """Whether `subject` may perform `action` (infer, read, write) on `model`."""
    return acl_decision(policies, subject, model, action)[0]


def acl_decision(policies: Iterable[Policy], subject: Subject, model: str, action: str) -> tuple[bool, str | None]:
    """(allowed, the policy that decided): the deny that matched, the allow that matched, or the allow
    whose list the subject is not on; None when no ACL names the model and action."""
    acls = [p for p in policies if p.enabled and p.kind == PolicyKind.ACL]
    relevant = sorted(
        (p for p in acls if _names_model(p.spec["models"], model) and action in p.spec["actions"]),
        key=_by_precedence,
    )
    matching = [p for p in relevant if _acl_matches_subject(p.spec, subject)]
    deny = next((p for p in matching if p.spec["effect"] == "deny"), None)
    if deny is not None:
        return False, deny.name
    if matching:
        return True, matching[0].name
    # Nobody is allowed by name: open only if no ACL restricts this model and action at all.
    restricting = next((p for p in relevant if p.spec["effect"] == "allow"), None)
    return restricting is None, restricting.name if restricting else None


def _by_precedence(policy: Policy) -> tuple[int, str]:
    return (-policy.priority, policy.name)


def _policy_matches_model(policy: Policy, model: str, revision: str | None) -> bool:
    spec = policy.spec
    if spec.get("model") not in (model, WILDCARD):
        return False
    return revision is None or spec.get("revision") in (None, revision)


def effective_policy(policies: Iterable[Policy], kind: str, model: str, revision: str | None = None) -> Policy | None:
    """The enabled pin or load_balancing policy for `model`: highest priority, then name."""
    if kind not in (PolicyKind.PIN, PolicyKind.LOAD_BALANCING):
        raise ValueError(f"effective_policy picks one pin or load_balancing policy, not {kind!r}")
    candidates = [p for p in policies if p.enabled and p.kind == kind and _policy_matches_model(p, model, revision)]
    return min(candidates, key=_by_precedence, default=None)


def applicable_quotas(policies: Iterable[Policy], model: str, tenant: str | None) -> list[Policy]:
    """The quotas a request must fit: the winning one per scope, global first."""
    targets = {"global": None, "tenant": tenant, "model": model}
    winners = []
    for scope, target in targets.items():
        candidates = [
            p
            for p in policies
            if p.enabled
            and p.kind == PolicyKind.QUOTA
            and p.spec["scope"] == scope
            and (scope == "global" or (target is not None and p.spec.get("target") == target))
        ]
        winner = min(candidates, key=_by_precedence, default=None)
        if winner is not None:
            winners.append(winner)
    return winners
