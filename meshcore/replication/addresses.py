"""What a Raft address is: `HOST:PORT`, as MESH_RAFT_ADDRESS, MESH_RAFT_PEERS and cluster members take it.

One check for all of them: the settings (at start), the API (`POST /api/v1/cluster/members/`)
and `manage.py cluster_member`. PySyncObj names a replica by this exact string and splits it
at the last colon, so an IPv6 address is written without brackets (`::1:4321`) and the port
without leading zeros: `host:04321` would be another replica than `host:4321` to it.

Pure Python (no Django): the settings module imports it.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[1-9][0-9]{0,4}$")


def raft_address_problem(address: object) -> str | None:
    """Why `address` is not a replica's `HOST:PORT`, or None when it is one."""
    if not isinstance(address, str) or not address:
        return "Use HOST:PORT, e.g. 10.0.0.5:4321."
    if address != address.strip() or any(character.isspace() for character in address):
        return f"{address!r} contains spaces; use HOST:PORT, e.g. 10.0.0.5:4321."
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port:
        return f"{address!r} is not HOST:PORT, e.g. 10.0.0.5:4321."
    if not _PORT.match(port) or int(port) > 65535:
        return f"The port in {address!r} must be a number from 1 to 65535 (without leading zeros)."
    return _host_problem(host, address)


def check_raft_address(address: object) -> str:
    """`address` itself when it is a replica's `HOST:PORT`; ValueError saying what is wrong otherwise."""
    problem = raft_address_problem(address)
    if problem:
        raise ValueError(problem)
    return address  # type: ignore[return-value]


def _host_problem(host: str, address: str) -> str | None:
    if host.startswith("[") or host.endswith("]"):
        return f"Write the IPv6 address in {address!r} without brackets (e.g. ::1:4321): Raft splits at the last colon."
    if ":" in host:
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} in {address!r} is neither a host name nor an IP address."
        return _ip_problem(ip, address)
    if re.fullmatch(r"[0-9.]+", host):
        # All digits and dots: an IPv4 address or nothing (a resolver would read "0" or "10.1" as one).
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} in {address!r} is not an IPv4 address (four numbers 0-255, e.g. 10.0.0.5)."
        return _ip_problem(ip, address)
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.removesuffix(".").split(".")):
        return f"{host!r} in {address!r} is not a host name (letters, digits, '-' and '_', separated by dots)."
    return None


def _ip_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, address: str) -> str | None:
    if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255":
        return f"{address!r} is not an address another replica can connect to; give this replica's own address."
    return None
