"""One routing decision, apart from any protocol: the seam the HTTP proxy, explain and (next) gRPC share.

Given the routing table, this process's balancer and who is asking:

- `balancing_for`: the model's `load_balancing` policy as settings (strategy, weights,
  retries, timeout, hash header, fallback nodes), or the process defaults;
- `check_access`: the `acl` policies' verdict, naming the policy that refused;
- `quota_rules_for`: the quotas the request must fit (enforced by `quotas.QuotaGate`);
- `order_targets`: the candidates in the order to try them (fallback nodes last).

What depends only on the table is computed once per table (it is immutable) and kept in
its memo, so a request pays a dictionary lookup for it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from meshcore import policies
from meshcore.routing import scoring
from meshcore.routing.balancer import Balancer
from meshcore.routing.desired import TokenInfo
from meshcore.routing.quotas import QuotaRule, quota_rules
from meshcore.routing.table import RoutingTable, Target


@dataclass(frozen=True, slots=True)
class Balancing:
    strategy: str
    retries: int
    timeout_s: float
    hash_header: str | None  # lower case
    policy: str | None
    weights: dict[str, float]
    fallback_nodes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str
    detail: str
    retry_after_s: float | None = None


def balancing_for(table: RoutingTable, model: str) -> Balancing:
    key = ("balancing", model)
    found = table.memo.get(key)
    if found is None:
        policy = table.balancing_policy(model)
        spec = policy.spec if policy else {}
        header = spec.get("hash_header")
        found = table.memo[key] = Balancing(
            strategy=spec.get("strategy", settings.MESH_PROXY_STRATEGY),
            retries=spec.get("retries", settings.MESH_PROXY_RETRIES),
            timeout_s=spec.get("timeout_ms", settings.MESH_PROXY_TIMEOUT_MS) / 1000,
            hash_header=header.lower() if header else None,
            policy=policy.name if policy else None,
            weights=scoring.weights_for(spec.get("weights")),
            fallback_nodes=frozenset(spec.get("fallback_nodes", ())),
        )
    return found


def subject_of(token: TokenInfo | None) -> policies.Subject:
    if token is None:
        return policies.Subject()
    return policies.Subject(username=token.username, groups=token.groups, token_name=token.name)


def check_access(table: RoutingTable, token: TokenInfo | None, model: str, action: str = "infer") -> Refusal | None:
    """None when the acl policies let this token's user infer on `model`; else a 403 naming the policy."""
    key = ("acl", token.username if token else None, token.name if token else None, model, action)
    verdict = table.memo.get(key)
    if verdict is None:
        acls = table.desired.policies_of("acl")
        verdict = table.memo[key] = (
            policies.acl_decision(acls, subject_of(token), model, action) if acls else (True, None)
        )
    allowed, policy = verdict
    if allowed:
        return None
    who = f"user {token.username!r}" if token else "anonymous requests"
    return Refusal(403, "forbidden_by_policy", f"acl policy {policy!r} does not let {who} {action} on model {model!r}.")


def quota_rules_for(table: RoutingTable, model: str, tenant: str | None) -> list[QuotaRule]:
    key = ("quota", model, tenant)
    rules = table.memo.get(key)
    if rules is None:
        quotas = table.desired.policies_of("quota")
        rules = table.memo[key] = quota_rules(quotas, model, tenant) if quotas else []
    return rules


def order_targets(
    balancer: Balancer,
    table: RoutingTable,
    model: str,
    eligible: Sequence[Target],
    balancing: Balancing,
    hash_value: str | None = None,
) -> list[Target]:
    """The targets to try, best first; targets on the policy's fallback nodes only after all others."""
    if balancing.fallback_nodes:
        primary = [t for t in eligible if t.node not in balancing.fallback_nodes]
        fallback = [t for t in eligible if t.node in balancing.fallback_nodes]
        if primary:
            return _order(balancer, table, model, primary, balancing, hash_value) + _order(
                balancer, table, model, fallback, balancing, hash_value
            )
    return _order(balancer, table, model, eligible, balancing, hash_value)


def _order(
    balancer: Balancer,
    table: RoutingTable,
    model: str,
    targets: Sequence[Target],
    balancing: Balancing,
    hash_value: str | None,
) -> list[Target]:
    limit = 1 + balancing.retries
    if balancing.strategy != "score_based" or len(targets) <= 1:
        return balancer.order(balancing.strategy, model, targets, hash_value, limit=limit)
    chosen = scoring.choose(
        _score_rows(balancer, table, model, targets, balancing),
        balancing.weights,
        balancer.latency_ms,
        balancer.random,
        limit,
    )
    if len(chosen) < limit:  # a sample was scored: the others follow as retries
        chosen += [t for t in targets if t not in chosen][: limit - len(chosen)]
    return chosen


def _score_rows(
    balancer: Balancer, table: RoutingTable, model: str, targets: Sequence[Target], balancing: Balancing
) -> list[scoring.Row]:
    """The candidates as `scoring.choose` reads them: built once per table for the model's usual
    target list (the same tuple until the table changes), ad hoc for a list narrowed by ejection."""
    key = ("rows", model, balancing.policy)
    held = table.memo.get(key)
    if held is not None and held[0] is targets:
        return held[1]
    rows = scoring.candidate_rows(
        targets, balancer.service.setdefault(model, {}), telemetry_for(table, model, balancing)
    )
    if isinstance(targets, tuple):  # the table's own list (a narrowed one is a new list each time)
        table.memo[key] = (targets, rows)
    return rows


def telemetry_for(table: RoutingTable, model: str, balancing: Balancing) -> dict[str, tuple[float, float, float]]:
    """The telemetry part of every target's score for `model`, once per table."""
    key = ("telemetry", model, balancing.policy)
    found = table.memo.get(key)
    if found is None:
        found = table.memo[key] = scoring.telemetry_scores(table.signals, model, balancing.weights)
    return found


def explain(
    table: RoutingTable,
    balancer: Balancer,
    model: str,
    version: str = "",
    token: TokenInfo | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """The decision the router would make now, with every signal and every excluded target's reason."""
    balancing = balancing_for(table, model)
    routes = table.routes(model)
    targets = list(routes.targets(version))
    excluded = [
        {"target": e.target.key, "reason": e.reason, **({"detail": e.detail} if e.detail else {})}
        for e in routes.excluded
    ]
    if version:
        excluded += [
            {"target": t.key, "reason": "version not loaded", "detail": f"version {version!r}"}
            for t in routes.targets()
            if t not in targets
        ]
    ejected = balancer.ejected()
    eligible, panic = balancer.eligible(targets)
    excluded += [
        {"target": t.key, "reason": "ejected", "detail": f"{ejected.get(t.key, 0):.0f} s left"}
        for t in targets
        if t not in eligible
    ]
    refusals = []
    access = check_access(table, token, model) if token is not None else None
    if access is not None:
        refusals.append({"policy": "acl", "detail": access.detail})
    rules = quota_rules_for(table, model, tenant if tenant is not None else (token.tenant if token else None))
    fallback = [t for t in eligible if t.node in balancing.fallback_nodes]
    primary = [t for t in eligible if t.node not in balancing.fallback_nodes] or fallback
    ranked = scoring.rank(
        primary,
        model,
        balancer.service.get(model, {}),
        table.signals,
        balancing.weights,
        balancer.latency_ms,
        explain=True,
        rng=random.Random(0),  # noqa: S311  (a fixed seed: explain is reproducible)
    )
    candidates = []
    for position, scored in enumerate(ranked, start=1):
        weighted_total = sum(s.score * s.weight for s in scored.signals.values()) or 1.0
        candidates.append(
            {
                "rank": position,
                "target": scored.key,
                "score": round(scored.score, 3),
                "expected_wait_ms": round(scored.wait_s * 1000, 3),
                "signals": {
                    name: {
                        "raw": signal.raw,
                        "score": round(signal.score, 3),
                        "weight": signal.weight,
                        "share": round(signal.score * signal.weight / weighted_total, 4) if signal.weight else 0.0,
                        "age_s": None if signal.age_s is None else round(signal.age_s, 3),
                        "stale": signal.stale,
                    }
                    for name, signal in scored.signals.items()
                },
            }
        )
    if primary is not fallback:
        candidates += [{"rank": None, "target": t.key, "fallback": True} for t in fallback]
    return {
        "model": model,
        "version": version or None,
        "known": table.knows(model),
        "strategy": balancing.strategy,
        "policy": balancing.policy,
        "weights": balancing.weights,
        "retries": balancing.retries,
        "timeout_ms": round(balancing.timeout_s * 1000),
        "panic": panic,
        "table_age_s": round(time.time() - table.built_at, 3),
        "candidates": candidates,
        "excluded": excluded,
        "refused_by": refusals,
        "quotas": [
            {
                "policy": r.policy,
                "max_requests_per_second": r.rate,
                "max_concurrent": r.max_concurrent,
                "enforcement": "block" if r.enforce else "log",
            }
            for r in rules
        ],
        "unroutable": None if targets else table.unroutable_reason(model, version),
    }
