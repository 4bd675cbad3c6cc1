"""The data path for `/proxy/...`: KServe v2 inference routed to the best Triton right now.

A plain ASGI application outside Django's request cycle. A request reads only process
memory: the routing table (`meshcore.routing.view`), the API tokens in it, and this
process's router-local state (`meshcore.routing.balancer`). No database query, no store
round trip, and no new upstream connection in steady state.

One request: route the path, check the token, read the body (bounded), find its Triton
sequence, order the model's routable targets by the strategy its `load_balancing` policy
names, send it to the first, on a connect failure to the next (within `retries` and the
retry budget), and stream the answer back with `x-request-id` and `x-infermesh-target`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.db import connections
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshcore.events import record_event
from meshcore.models import EventType
from meshcore.proxy import kserve
from meshcore.proxy.metrics import ProxyMetrics, RouterAggregates
from meshcore.proxy.responses import Headers, Receive, Send, send_error, send_json
from meshcore.proxy.upstream import BrokenAnswer, ConnectFailure, UpstreamResponse, upstream_pool
from meshcore.routing import decide
from meshcore.routing.balancer import Balancer, Ejection, OutlierSettings, RetryBudget
from meshcore.routing.decide import Balancing
from meshcore.routing.desired import TokenInfo
from meshcore.routing.quotas import LocalQuotas, QuotaGate, QuotaRule, RedisQuotas
from meshcore.routing.sequences import SequenceTable
from meshcore.routing.table import RoutingTable, Target
from meshcore.routing.view import RoutingView, routing_view
from meshcore.tokens import NODE_TOKEN_PREFIX, token_digest

logger = logging.getLogger(__name__)

PREFIX = "/proxy/"
# Not forwarded either way: hop-by-hop headers, the mesh's own credentials, and what the client library sets.
REQUEST_HEADERS_DROPPED = frozenset(
    {
        b"host",
        b"authorization",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"x-request-id",
        b"expect",
    }
)
RESPONSE_HEADERS_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
        b"server",
        b"date",
        b"x-request-id",
        b"proxy-authenticate",
    }
)
# Seconds between round-trip probes of the targets in use (the network_latency signal).
LATENCY_PROBE_S = 2
PROBE_TIMEOUT_S = 1.0
# Responses up to this size are read whole and sent in one message; larger ones are streamed.
WHOLE_RESPONSE_BYTES = 1 << 20
# A client's disconnect is watched for only once its answer takes this long (`_unless_client_leaves`):
# a client that leaves has its upstream request cancelled, and its in-flight slot freed, at most this late.
WATCH_CLIENT_AFTER_S = 0.05
# Answers from a target that count as its failure (Triton's own 4xx and 500 are the request's fault).
FAILURE_STATUSES = frozenset({502, 503, 504})


class ClientGone(Exception):
    """The client disconnected before its answer started."""


class ConnectFailed(Exception):
    def __init__(self, target: Target, error: BaseException) -> None:
        super().__init__(f"{target.key}: {error.__class__.__name__} {error}")
        self.target = target


@dataclass(slots=True)
class Caller:
    token: TokenInfo | None  # None: anonymous (only with MESH_PROXY_ALLOW_ANONYMOUS)

    @property
    def tenant(self) -> str | None:
        return self.token.tenant if self.token else None


@dataclass(slots=True)
class Exchange:
    """One request on its way through the proxy: what every attempt at a target needs."""

    receive: Receive
    send: Send
    method: str
    route: kserve.Route
    body: bytes
    upstream_headers: Headers
    balancing: Balancing
    request_id: bytes
    extra_headers: Headers
    started: float
    sequence: kserve.Sequence | None


class ProxyRouter:
    """The `/proxy/` ASGI application of one process."""

    def __init__(self, view: RoutingView | None = None) -> None:
        self.view = view or routing_view
        self.balancer = Balancer(
            OutlierSettings(
                consecutive_failures=settings.MESH_PROXY_EJECT_AFTER_FAILURES,
                base_ejection_s=settings.MESH_PROXY_EJECTION_S,
                max_ejection_s=settings.MESH_PROXY_MAX_EJECTION_S,
            ),
            RetryBudget(minimum=settings.MESH_PROXY_RETRY_BUDGET_MIN),
        )
        self.balancer.on_ejection = self._ejection
        self.sequences = SequenceTable(idle_s=settings.MESH_PROXY_SEQUENCE_IDLE_S)
        self.metrics = ProxyMetrics()
        self.aggregates = RouterAggregates()
        self.max_body = settings.MESH_PROXY_MAX_BODY_BYTES
        self.allow_anonymous = settings.MESH_PROXY_ALLOW_ANONYMOUS
        self._events = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy-events")
        self._ticker: asyncio.Task | None = None
        # Quotas shared by every router process through Redis when there is one; else this process's own.
        self.quotas = QuotaGate(RedisQuotas(settings.REDIS_URL) if settings.REDIS_URL else LocalQuotas())
        self._concurrency_checked: dict[tuple[str, str], float] = {}
        self._background: set[asyncio.Future] = set()
        self._checking: set[str] = set()  # targets whose port is being checked after a failure
        self._routable: set[tuple[str, str]] | None = None
        self._table_seen: RoutingTable | None = None

    async def close(self) -> None:
        """Stop the ticker and the background probes, and wait for the events being recorded."""
        for task in (self._ticker, *self._background):
            if task is not None:
                task.cancel()
        await asyncio.to_thread(self._events.shutdown, wait=True)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"the proxy serves HTTP only, not {scope['type']!r}")
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick())
        headers = dict(scope["headers"])  # the last of a repeated header wins, as Triton reads them
        request_id = headers.get(b"x-request-id") or _new_request_id()
        try:
            await self._handle(scope, receive, send, headers, request_id)
        except ClientGone:
            return
        except Exception:
            logger.exception("proxy request %s failed", request_id.decode(errors="replace"))
            with suppress(Exception):
                await send_error(
                    send, 500, "internal_error", "The proxy failed on this request; see its log.", request_id
                )

    # ---- one request ----

    async def _handle(self, scope: dict, receive: Receive, send: Send, headers: dict, request_id: bytes) -> None:
        path = scope["path"]
        try:
            route = kserve.parse_path(path[len(PREFIX) :] if path.startswith(PREFIX) else "")
        except kserve.NotARoute as error:
            await send_error(send, 404, "not_found", str(error), request_id)
            return
        method = scope["method"]
        if route.kind == kserve.REPOSITORY:
            await send_error(
                send,
                403,
                "repository_forbidden",
                "Loading and unloading models belongs to the control plane: write a pin policy "
                "(/api/v1/policies/) instead of calling the repository API through the proxy.",
                request_id,
            )
            return
        allowed = kserve.METHODS[route.kind]
        if method != allowed and not (method == "HEAD" and allowed == "GET"):
            await send_error(
                send,
                405,
                "method_not_allowed",
                f"{route.kind} takes {allowed}, not {method}.",
                request_id,
                [(b"allow", allowed.encode())],
            )
            return
        table = self.view.table
        if route.kind == kserve.HEALTH_LIVE:
            await send_json(send, 200, {"live": True}, [(b"x-request-id", request_id)])
            return
        if route.kind == kserve.HEALTH_READY:
            if table.any_routable:
                await send_json(send, 200, {"ready": True}, [(b"x-request-id", request_id)])
            else:
                await send_error(
                    send,
                    503,
                    "not_ready",
                    "No target is routable: no model is READY on a healthy node.",
                    request_id,
                    [(b"retry-after", b"1")],
                )
            return
        caller = await self._authenticate(headers, table, send, request_id)
        if caller is None:
            return
        if route.kind == kserve.SERVER_METADATA:
            await send_json(send, 200, _SERVER_METADATA, [(b"x-request-id", request_id)])
            return
        await self._model_request(scope, receive, send, headers, request_id, route, table, caller)

    async def _authenticate(
        self, headers: dict, table: RoutingTable, send: Send, request_id: bytes, anonymous: bool | None = None
    ) -> Caller | None:
        header = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if not header:
            if self.allow_anonymous if anonymous is None else anonymous:
                return Caller(None)
            await send_error(
                send,
                401,
                "unauthenticated",
                "Send an API token: 'Authorization: Bearer imt_...'.",
                request_id,
                [(b"www-authenticate", b'Bearer realm="proxy"')],
            )
            return None
        if scheme.lower() != "bearer" or not value or " " in value:
            await send_error(
                send,
                401,
                "unauthenticated",
                "Malformed Authorization header; send 'Bearer <token>'.",
                request_id,
                [(b"www-authenticate", b'Bearer realm="proxy"')],
            )
            return None
        if value.startswith(NODE_TOKEN_PREFIX):
            await send_error(
                send,
                403,
                "node_token",
                "A node token reports telemetry; it cannot send inference. Use an API token.",
                request_id,
            )
            return None
        token = table.desired.tokens.get(token_digest(value))
        problem = None
        if token is None or token.revoked:
            problem = "Invalid or revoked API token."
        elif token.expires_at is not None and token.expires_at.timestamp() <= time.time():
            problem = "This API token has expired; issue a new one."
        elif not token.user_active:
            problem = "The user this token belongs to is inactive."
        if problem:
            await send_error(
                send,
                401,
                "unauthenticated",
                problem,
                request_id,
                [(b"www-authenticate", b'Bearer realm="proxy", error="invalid_token"')],
            )
            return None
        return Caller(token)

    async def _model_request(
        self,
        scope: dict,
        receive: Receive,
        send: Send,
        headers: dict,
        request_id: bytes,
        route: kserve.Route,
        table: RoutingTable,
        caller: Caller,
    ) -> None:
        started = time.perf_counter()
        model = route.model
        if not table.knows(model):
            await send_error(
                send,
                404,
                "unknown_model",
                f"No model {model!r}: it is not in the catalog and no runtime reports it.",
                request_id,
            )
            return
        targets = table.routes(model).targets(route.version)
        if not targets:
            await send_error(
                send,
                503,
                "no_target",
                table.unroutable_reason(model, route.version),
                request_id,
                [(b"retry-after", b"1")],
            )
            return
        refused = decide.check_access(table, caller.token, model)
        if refused is not None:
            await send_error(send, refused.status, refused.error, refused.detail, request_id)
            return
        body = await self._read_body(scope, receive, send, headers, request_id)
        if body is None:
            return
        balancing = decide.balancing_for(table, model)
        eligible, panic = self.balancer.eligible(targets)
        sequence = None
        if route.kind == kserve.INFER:
            try:
                header_length = headers.get(b"inference-header-content-length")
                sequence = kserve.find_sequence(
                    body,
                    int(header_length) if header_length is not None else None,
                    headers.get(b"content-encoding", b"").decode("latin-1").strip().lower(),
                )
            except (kserve.MalformedRequest, ValueError) as error:
                await send_error(send, 400, "malformed_request", str(error), request_id)
                return
        if sequence is not None:
            order = self._sequence_order(model, sequence, eligible, balancing)
            if order is None:
                await send_error(
                    send,
                    503,
                    "sequence_target_gone",
                    f"The target holding sequence {sequence.id!r} of model {model!r} is no longer routable; "
                    "start the sequence again (sequence_start).",
                    request_id,
                    [(b"retry-after", b"1")],
                )
                return
        else:
            hash_key = headers.get(balancing.hash_header.encode()) if balancing.hash_header else None
            order = decide.order_targets(
                self.balancer, table, model, eligible, balancing, hash_key.decode("latin-1") if hash_key else None
            )
        upstream_headers = [header for header in scope["headers"] if header[0] not in REQUEST_HEADERS_DROPPED]
        upstream_headers.append((b"x-request-id", request_id))
        strategy_header = (b"x-infermesh-strategy", _strategy_label(balancing, panic).encode())
        extra_headers = [strategy_header]
        if headers.get(b"x-infermesh-explain") == b"1" and caller.token is not None and caller.token.is_staff:
            extra_headers.append((b"x-infermesh-explain", _compact_explain(self, table, model, route.version, order)))
        rules = decide.quota_rules_for(table, model, caller.tenant)
        entered: list[QuotaRule] = []
        if rules:
            quota_refusal, entered = await self.quotas.admit(rules)
            if quota_refusal is not None:
                self._done(model, "none", 429, started, None, error=False)
                await send_error(
                    send,
                    429,
                    "quota_exceeded",
                    quota_refusal.detail + ".",
                    request_id,
                    [(b"retry-after", str(max(1, math.ceil(quota_refusal.retry_after_s))).encode())],
                )
                return
        try:
            exchange = Exchange(
                receive,
                send,
                scope["method"],
                route,
                body,
                upstream_headers,
                balancing,
                request_id,
                extra_headers,
                started,
                sequence,
            )
            await self._forward(exchange, order)
        finally:
            if entered:
                await self.quotas.release(entered)

    async def _read_body(
        self, scope: dict, receive: Receive, send: Send, headers: dict, request_id: bytes
    ) -> bytes | None:
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                declared_length = int(declared)
            except ValueError:
                await send_error(send, 400, "malformed_request", "Content-Length is not a number.", request_id)
                return None
            if declared_length > self.max_body:
                await send_error(send, 413, "body_too_large", _too_large(self.max_body), request_id)
                return None
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_error(send, 413, "body_too_large", _too_large(self.max_body), request_id)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _sequence_order(
        self, model: str, sequence: kserve.Sequence, eligible: list[Target], balancing: Balancing
    ) -> list[Target] | None:
        key = (model, sequence.id)
        held_by = self.sequences.target_of(key)
        if held_by is not None and not sequence.start:
            target = next((t for t in eligible if t.key == held_by), None)
            return [target] if target else None
        # A new sequence (or one restarted): choose as usual, then keep it there, retries included.
        first = decide.order_targets(self.balancer, self.view.table, model, eligible, balancing)[:1]
        if first:
            self.sequences.remember(key, first[0].key)
        return first

    async def _forward(self, exchange: Exchange, order: list[Target]) -> None:
        send, route, balancing, sequence = exchange.send, exchange.route, exchange.balancing, exchange.sequence
        request_id, started = exchange.request_id, exchange.started
        model = route.model
        budget = self.balancer.budget
        budget.active_requests += 1
        retrying = False
        failures: list[str] = []
        try:
            for attempt, target in enumerate(order[: 1 + balancing.retries]):
                if attempt:
                    allowed = budget.allows_retry()
                    self.metrics.retried(model, allowed)
                    if not allowed:
                        failures.append("retry budget exhausted")
                        break
                    if not retrying:
                        budget.active_retries += 1
                        retrying = True
                try:
                    await self._attempt(exchange, target)
                except ConnectFailed as failure:
                    failures.append(str(failure))
                    continue
                if sequence is not None and sequence.end:
                    self.sequences.forget((model, sequence.id))
                return
        finally:
            budget.active_requests -= 1
            if retrying:
                budget.active_retries -= 1
        self._done(model, "none", 502, started, None, error=True)
        await send_error(
            send,
            502,
            "upstream_failed",
            f"Every target tried failed before answering: {'; '.join(failures) or 'no target'}.",
            request_id,
            [(b"retry-after", b"1")],
            tried=len(failures),
        )

    async def _attempt(self, exchange: Exchange, target: Target) -> None:
        """Send to one target and stream its answer back; ConnectFailed when it never answered."""
        send, route, balancing, method = exchange.send, exchange.route, exchange.balancing, exchange.method
        request_id, started, receive = exchange.request_id, exchange.started, exchange.receive
        state = self.balancer.state(target.key)
        service = self.balancer.service_stats(route.model, target.key)
        if (target.key, route.model) not in self._concurrency_checked:
            self._concurrency_checked[(target.key, route.model)] = time.monotonic()
            self._in_background(self._learn_concurrency(target, route.model))
        state.in_flight += 1
        service.in_flight += 1
        self.metrics.in_flight(target.key, 1)
        sent_at = time.perf_counter()
        response = None
        try:
            request = upstream_pool().request(
                method,
                target.url,
                route.upstream_path,
                exchange.upstream_headers,
                exchange.body if method == "POST" else None,
                balancing.timeout_s,
            )
            try:
                response = await _unless_client_leaves(receive, request)
            except ConnectFailure as error:
                self.balancer.record_failure(target.key, refused=error.refused)
                if not error.refused:
                    self._in_background(self._check_listening(target))
                service.observe(balancing.timeout_s, failed=True)  # failing fast must not look fast
                raise ConnectFailed(target, error) from None
            except TimeoutError:
                service.observe(balancing.timeout_s, failed=True)
                detail = f"{target.key} did not answer within {balancing.timeout_s:g} s (the policy's timeout_ms)."
                await self._target_failed(send, route, target, started, request_id, 504, "upstream_timeout", detail)
                return
            except BrokenAnswer as error:
                service.observe(balancing.timeout_s, failed=True)
                detail = f"{target.key} answered something that cannot be passed on: {error}"
                await self._target_failed(send, route, target, started, request_id, 502, "upstream_failed", detail)
                return
            status = response.status
            if status in FAILURE_STATUSES:
                self.balancer.record_failure(target.key)
            else:
                self.balancer.record_success(target.key)
            headers: Headers = [header for header in response.headers if header[0] not in RESPONSE_HEADERS_DROPPED]
            headers += [
                (b"x-request-id", request_id),
                (b"x-infermesh-target", target.key.encode()),
                *exchange.extra_headers,
            ]
            length = response.content_length
            if length is not None and length <= WHOLE_RESPONSE_BYTES:
                try:
                    payload = await response.read()
                except (TimeoutError, BrokenAnswer) as error:
                    detail = f"{target.key} broke off its answer: {error!r}"
                    await self._target_failed(send, route, target, started, request_id, 502, "upstream_failed", detail)
                    return
                upstream_s = time.perf_counter() - sent_at
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
            else:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                try:
                    async for chunk in response.chunks():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except (TimeoutError, BrokenAnswer):
                    # The status is sent: all that is left is to end the answer short, as the upstream did.
                    self.balancer.record_failure(target.key)
                    logger.warning("%s broke off a streamed answer (request %s)", target.key, request_id.decode())
                    raise ClientGone from None
                await send({"type": "http.response.body", "body": b""})
                upstream_s = time.perf_counter() - sent_at
            failed = status >= 500
            service.observe(max(upstream_s, balancing.timeout_s) if failed else upstream_s, failed=failed)
            self._done(route.model, target.key, status, started, upstream_s, error=failed)
        finally:
            if response is not None:
                response.release()
            state.in_flight -= 1
            service.in_flight -= 1
            self.metrics.in_flight(target.key, -1)

    async def _target_failed(
        self,
        send: Send,
        route: kserve.Route,
        target: Target,
        started: float,
        request_id: bytes,
        status: int,
        error: str,
        detail: str,
    ) -> None:
        """A target that took the request and failed it: counted against it, and answered in JSON."""
        self.balancer.record_failure(target.key)
        self._done(route.model, target.key, status, started, None, error=True)
        await send_error(send, status, error, detail, request_id, [(b"x-infermesh-target", target.key.encode())])

    def _done(self, model: str, target: str, code: int, started: float, upstream_s: float | None, error: bool) -> None:
        total = time.perf_counter() - started
        self.metrics.request_done(model, target, code, total, upstream_s)
        self.aggregates.record(model, target, total, error)

    # ---- /metrics ----

    async def metrics_app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Prometheus's text format; a staff API token unless MESH_METRICS_PUBLIC is set."""
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id") or _new_request_id()
        if not settings.MESH_METRICS_PUBLIC:
            caller = await self._authenticate(headers, self.view.table, send, request_id, anonymous=False)
            if caller is None:
                return
            if not caller.token.is_staff:
                await send_error(
                    send,
                    403,
                    "forbidden",
                    "Metrics need a staff user's API token (or MESH_METRICS_PUBLIC=true).",
                    request_id,
                )
                return
        self.balancer.restore_due()
        body = generate_latest()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # ---- background ----

    async def _tick(self) -> None:
        """On the serving loop, once a second: take in a new routing table, restore targets whose
        ejection ended, and every `LATENCY_PROBE_S` measure the round trip to the targets this
        router has sent to (a probe refused ejects its target). On the loop, since the balancer's
        state is the loop's alone."""
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            table = self.view.table
            if table is not self._table_seen:
                self._table_seen = table
                self._table_changed(table)
            self.balancer.restore_due()
            ticks += 1
            if ticks % LATENCY_PROBE_S == 0:
                with suppress(Exception):
                    await self._probe_latency()

    async def _probe_latency(self) -> None:
        used = {key for by_target in self.balancer.service.values() for key in by_target}
        targets = {t.key: t for routes in self.view.table.models.values() for t in routes.targets() if t.key in used}
        await asyncio.gather(*(self._probe(target) for target in targets.values()), return_exceptions=True)

    async def _probe(self, target: Target) -> None:
        started = time.perf_counter()
        try:
            response = await upstream_pool().request("GET", target.url, "/v2/health/live", timeout_s=PROBE_TIMEOUT_S)
        except ConnectFailure as failure:
            if failure.refused:  # stopped: ejected now, not when traffic finds it (it may get none)
                self.balancer.record_failure(target.key, refused=True)
            raise
        try:
            await response.read()
        finally:
            response.release()
        if response.status == 200:
            self.balancer.latency_ms[target.key] = ((time.perf_counter() - started) * 1000, time.monotonic())

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)  # kept until done: the loop holds tasks only weakly
        task.add_done_callback(self._background.discard)

    async def _check_listening(self, target: Target) -> None:
        """After a connection broke before an answer: whether anything still listens on the target's
        port, with a fresh connection. A refusal ejects it now; score_based would otherwise send it
        too few requests to count failures in a row, and its agent may take a report to notice."""
        if target.key in self._checking:
            return
        self._checking.add(target.key)
        try:
            address = urlsplit(target.url)
            _, writer = await asyncio.wait_for(asyncio.open_connection(address.hostname, address.port), 1.0)
            writer.close()
        except ConnectionRefusedError:
            self.balancer.record_failure(target.key, refused=True)
        except (OSError, TimeoutError, ValueError):
            pass  # not a refusal: the failures in a row decide
        finally:
            self._checking.discard(target.key)

    async def _learn_concurrency(self, target: Target, model: str) -> None:
        """The model's instance count on the target (its `instance_group`), for the expected wait."""
        try:
            response = await upstream_pool().request(
                "GET", target.url, f"/v2/models/{model}/config", timeout_s=PROBE_TIMEOUT_S
            )
            try:
                config = orjson.loads(await response.read()) if response.status == 200 else {}
            finally:
                response.release()
        except Exception:
            logger.info("could not read %s's configuration on %s", model, target.key, exc_info=True)
            return
        count = (
            sum(
                int(group.get("count", 1)) * max(1, len(group.get("gpus", [])))
                for group in config.get("instance_group", [])
            )
            if isinstance(config, dict)
            else 0
        )
        if count:
            self.balancer.service_stats(model, target.key).concurrency = count

    def _table_changed(self, table: RoutingTable) -> None:
        """A target that is routable again (undrained, healthy, restarted) starts unmeasured and not
        ejected: what was measured before it left says nothing of it now, its agent has just seen it
        healthy, and a stale slow cost would keep it idle."""
        routable = {(model, t.key) for model, routes in table.models.items() for t in routes.targets()}
        if self._routable is not None:
            for model, key in routable - self._routable:
                self.balancer.restore(key)
                stats = self.balancer.service.get(model, {}).get(key)
                if stats is not None:
                    stats.forget()
        self._routable = routable

    def _ejection(self, ejection: Ejection) -> None:
        self.metrics.ejection(ejection.target, ejection.ejected)
        node = ejection.target.split("/", 1)[0]
        if ejection.ejected:
            logger.warning(
                "target %s ejected for %.0f s after %d failures in a row",
                ejection.target,
                ejection.for_s,
                ejection.failures,
            )
            event, data = (
                EventType.TARGET_EJECTED,
                {"target": ejection.target, "for_s": ejection.for_s, "failures": ejection.failures},
            )
        else:
            logger.info("target %s restored", ejection.target)
            for by_target in self.balancer.service.values():
                if ejection.target in by_target:
                    by_target[ejection.target].forget()
            event, data = EventType.TARGET_RESTORED, {"target": ejection.target}
        self._events.submit(_record_event, event, node, data)


def _record_event(event_type: str, node: str, data: dict) -> None:
    try:
        record_event(event_type, node_name=node, data=data, actor="router")
    except Exception:
        logger.warning("could not record %s for %s", event_type, data.get("target"), exc_info=True)
    finally:
        connections.close_all()


async def _unless_client_leaves(receive: Receive, request: Any) -> UpstreamResponse:
    """Await the upstream response, cancelling it if the client disconnects first (its in-flight slot is freed).

    The request is awaited in this task. Watching for `http.disconnect` takes a task of its own, and
    it starts only once the answer has taken WATCH_CLIENT_AFTER_S: most answers come sooner and
    cost a timer instead (two tasks and asyncio.wait cost about 50 us of CPU per request).
    """
    watch = _ClientWatch(asyncio.current_task(), receive)
    timer = asyncio.get_running_loop().call_later(WATCH_CLIENT_AFTER_S, watch.start)
    try:
        return await request
    except asyncio.CancelledError:
        if watch.left:
            watch.task.uncancel()
            raise ClientGone from None
        raise
    finally:
        timer.cancel()
        watch.stop()


class _ClientWatch:
    """Cancels a request's task when its client disconnects (see `_unless_client_leaves`)."""

    __slots__ = ("active", "left", "receive", "task", "watcher")

    def __init__(self, task: asyncio.Task, receive: Receive) -> None:
        self.task = task
        self.receive = receive
        self.watcher: asyncio.Task | None = None
        self.active = True
        self.left = False

    def start(self) -> None:
        if self.active:
            self.watcher = asyncio.ensure_future(_disconnected(self.receive))
            self.watcher.add_done_callback(self._watcher_done)

    def _watcher_done(self, watcher: asyncio.Task) -> None:
        if self.active and not watcher.cancelled() and watcher.exception() is None:
            self.left = True
            self.task.cancel()

    def stop(self) -> None:
        self.active = False
        if self.watcher is not None:
            self.watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _new_request_id() -> bytes:
    """32 random hex digits, as uuid4().hex has them, without its cost (no UUID object, no system call)."""
    return b"%032x" % random.getrandbits(128)


def _strategy_label(balancing: Balancing, panic: bool) -> str:
    return balancing.strategy + ("; panic" if panic else "")


def _compact_explain(router: ProxyRouter, table: RoutingTable, model: str, version: str, order: list[Target]) -> bytes:
    """The decision in one header line: strategy, then each candidate's score in the order tried."""
    explained = decide.explain(table, router.balancer, model, version)
    scores = {c["target"]: c.get("score") for c in explained["candidates"]}
    tried = ", ".join(f"{t.key}={scores.get(t.key)}" for t in order)
    out = "; ".join(f"{e['target']}:{e['reason']}" for e in explained["excluded"])
    return f"strategy={explained['strategy']}; order={tried}; excluded={out or 'none'}".encode("latin-1", "replace")


def _too_large(limit: int) -> str:
    return f"The request body is larger than MESH_PROXY_MAX_BODY_BYTES ({limit} bytes)."


def _server_metadata() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mesh_version = version("infermesh")
    except PackageNotFoundError:
        mesh_version = "0.1.0"
    return {
        "name": "infermesh",
        "version": mesh_version,
        "extensions": ["binary_tensor_data", "classification", "sequence", "statistics"],
    }


_SERVER_METADATA = _server_metadata()

proxy_app = ProxyRouter()
