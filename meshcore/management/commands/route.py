"""`manage.py route explain MODEL`: how the running mesh process would route MODEL now, and why."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from meshcore.proxy.explain import explain_now
from meshcore.replication.control import ask_control


class Command(BaseCommand):
    help = "Explain routing: the candidates ranked with every signal, and why the others are left out."

    def add_arguments(self, parser: CommandParser) -> None:
        # One action today; placement's commands will join it.
        parser.add_argument("action", choices=["explain"], help="explain: rank MODEL's targets as the router would now")
        parser.add_argument("model")
        parser.add_argument("--model-version", dest="model_version", default="", help="a model version (default: any)")
        parser.add_argument("--tenant", default=None, help="the tenant whose quotas to show")
        parser.add_argument("--json", action="store_true", help="print the whole explanation as JSON")

    def handle(
        self, *args: Any, action: str, model: str, model_version: str, tenant: str | None, **options: Any
    ) -> None:
        version = model_version
        request = {"action": "route_explain", "model": model, "version": version, "tenant": tenant}
        answer = ask_control(request, timeout=10)
        if answer is None:
            # No mesh process on this host: a table of our own (router-local figures start empty).
            explained, source = explain_now(model, version, tenant), "this command (no running mesh process)"
        elif "explain" in answer:
            explained, source = answer["explain"], "the running mesh process"
        else:
            raise CommandError(answer.get("message", "the running mesh process could not explain"))
        if options["json"]:
            self.stdout.write(json.dumps(explained, indent=2, default=str))
            return
        self.stdout.write(render(explained, source))


def render(explained: dict[str, Any], source: str) -> str:
    lines = [
        f"model {explained['model']}"
        + (f" version {explained['version']}" if explained["version"] else "")
        + f": strategy {explained['strategy']} (policy {explained['policy'] or 'none: defaults'}), "
        f"retries {explained['retries']}, timeout {explained['timeout_ms']} ms  [from {source}]",
    ]
    if not explained["known"]:
        lines.append("  unknown model: not in the catalog and no runtime reports it")
    if explained["unroutable"]:
        lines.append(f"  no routable target: {explained['unroutable']}")
    if explained["panic"]:
        lines.append("  panic mode: more than half the targets are ejected, so ejection is ignored")
    for candidate in explained["candidates"]:
        if candidate.get("fallback"):
            lines.append(f"  fallback  {candidate['target']} (only when no other target is left)")
            continue
        lines.append(
            f"  #{candidate['rank']} {candidate['target']}  score {candidate['score']:.1f}  "
            f"expected wait {candidate['expected_wait_ms']:.1f} ms"
        )
        for name, signal in candidate["signals"].items():
            state = "stale" if signal["stale"] else ("-" if not signal["weight"] else f"{signal['share']:.0%}")
            age = "" if signal["age_s"] is None else f", {signal['age_s']:.1f} s old"
            raw = round(signal["raw"], 3) if isinstance(signal["raw"], float) else signal["raw"]
            lines.append(
                f"      {name:<19} raw {json.dumps(raw, default=str):<40} score {signal['score']:6.1f}  "
                f"weight {signal['weight']:5.1f}  share {state}{age}"
            )
    for excluded in explained["excluded"]:
        detail = f" ({excluded['detail']})" if excluded.get("detail") else ""
        lines.append(f"  excluded  {excluded['target']}: {excluded['reason']}{detail}")
    for quota in explained["quotas"]:
        lines.append(
            f"  quota     {quota['policy']}: {quota['max_requests_per_second'] or '-'} req/s, "
            f"{quota['max_concurrent'] or '-'} in flight ({quota['enforcement']})"
        )
    return "\n".join(lines)
