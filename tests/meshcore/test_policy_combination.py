"""How enabled policies combine: explicit ACL deny wins; otherwise highest priority applies."""

import pytest

from meshcore.models import Policy
from meshcore.policies import Subject, acl_allows, applicable_quotas, effective_policy
from meshcore.policy_specs import validate_spec


def policy(name, kind, spec, priority=0, enabled=True):
    return Policy(name=name, kind=kind, spec=validate_spec(kind, spec), priority=priority, enabled=enabled)


def acl(name, effect, *, users=(), groups=(), tokens=(), models=("*",), actions=("infer",), enabled=True):
    subjects = {"users": list(users), "groups": list(groups), "tokens": list(tokens)}
    spec = {"subjects": subjects, "models": list(models), "actions": list(actions), "effect": effect}
    return policy(name, "acl", spec, enabled=enabled)


ALICE = Subject(username="alice", groups=frozenset({"team-a"}))
BOB = Subject(username="bob", groups=frozenset({"team-b"}))


def test_it_lets_an_explicit_deny_win_over_an_allow():
    policies = [acl("allow-team-a", "allow", groups=["team-a"]), acl("deny-alice", "deny", users=["alice"])]
    assert not acl_allows(policies, ALICE, "resnet", "infer")


def test_it_allows_only_the_named_subjects_once_a_model_is_restricted():
    policies = [acl("team-a-resnet", "allow", groups=["team-a"], models=["resnet"])]
    assert acl_allows(policies, ALICE, "resnet", "infer")
    assert not acl_allows(policies, BOB, "resnet", "infer")
    assert acl_allows(policies, BOB, "bert", "infer")  # nobody restricted bert


def test_it_ignores_disabled_acls_and_other_actions():
    policies = [
        acl("deny-all", "deny", users=["alice"], enabled=False),
        acl("deny-write", "deny", users=["alice"], actions=["write"]),
    ]
    assert acl_allows(policies, ALICE, "resnet", "infer")
    assert not acl_allows(policies, ALICE, "resnet", "write")


def test_it_matches_acl_subjects_by_token_name():
    policies = [acl("ci-only", "allow", tokens=["ci"], models=["resnet"])]
    assert acl_allows(policies, Subject(token_name="ci"), "resnet", "infer")
    assert not acl_allows(policies, Subject(token_name="laptop"), "resnet", "infer")


def lb(name, model, strategy, priority=0, enabled=True):
    return policy(name, "load_balancing", {"model": model, "strategy": strategy}, priority=priority, enabled=enabled)


def test_it_applies_the_highest_priority_policy_that_matches():
    policies = [lb("everything", "*", "round_robin", priority=1), lb("resnet", "resnet", "least_request", priority=5)]
    assert effective_policy(policies, "load_balancing", "resnet").name == "resnet"
    assert effective_policy(policies, "load_balancing", "bert").name == "everything"


def test_it_breaks_priority_ties_by_name_and_skips_disabled_ones():
    policies = [lb("b", "resnet", "random"), lb("a", "resnet", "round_robin"), lb("0", "resnet", "random", 9, False)]
    assert effective_policy(policies, "load_balancing", "resnet").name == "a"
    assert effective_policy([], "pin", "resnet") is None


def test_it_matches_pins_by_revision_when_one_is_given():
    pins = [
        policy("v2-pin", "pin", {"model": "resnet", "revision": "2", "nodes": ["gpu-a"]}, priority=3),
        policy("any-pin", "pin", {"model": "resnet", "nodes": ["gpu-b"]}),
    ]
    assert effective_policy(pins, "pin", "resnet", "2").name == "v2-pin"
    assert effective_policy(pins, "pin", "resnet", "1").name == "any-pin"


def test_it_refuses_to_pick_a_single_quota():
    with pytest.raises(ValueError, match="pin or load_balancing"):
        effective_policy([], "quota", "resnet")


def test_it_applies_one_quota_per_scope_together():
    quotas = [
        policy("global", "quota", {"scope": "global", "max_concurrent": 100}),
        policy("team-a-low", "quota", {"scope": "tenant", "target": "team-a", "max_concurrent": 5}),
        policy("team-a-high", "quota", {"scope": "tenant", "target": "team-a", "max_concurrent": 50}, priority=2),
        policy("bert", "quota", {"scope": "model", "target": "bert", "max_requests_per_second": 10}),
    ]
    assert [q.name for q in applicable_quotas(quotas, "resnet", "team-a")] == ["global", "team-a-high"]
    assert [q.name for q in applicable_quotas(quotas, "bert", None)] == ["global", "bert"]
