"""Which hosts and origins the web page answers to: the defence against DNS rebinding.

A page of ``evil.example`` whose name re-resolves to 127.0.0.1 makes the browser send the attacker's name in
``Host`` (and ``Origin``) to the daemon on loopback; the browser thinks it is talking to evil.example, so it
lets that page read the answers. So every request must name a host the page is really reached by: a loopback
name or address, the address it is bound to, or one of ``[web] hosts`` (a name given to it on the home
network or by a reverse proxy). A change request's ``Origin`` is compared with these origins, never with the
request's own ``Host`` (an attacker sends both). Pure functions over the header values; the middleware is in
service/web/server.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Names that always mean this machine (a browser never resolves `localhost` elsewhere).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})
#: Bind addresses that stand for every interface: they name no host of their own.
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or of a configured host, lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value


def is_loopback(name: str) -> bool:
    """Whether a host name (from `host_name`) is this machine's loopback."""
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AllowedOrigins:
    """The hosts (``Host``) and origins (``Origin``) of the page: loopback, the bound address, ``[web] hosts``."""

    scheme: str  # http or https
    port: int | None  # the bound port; None until the listener is up
    bound: str  # the bound address as `host_name` gives it ("" for a wildcard address)
    names: frozenset[str]  # ``[web] hosts``: names given to the page on the network or by a proxy

    @classmethod
    def of(cls, scheme: str, address: str, configured: tuple[str, ...] = (), port: int | None = None) -> AllowedOrigins:
        """The hosts of a page bound to ``address`` (``[web] address``) with the ``[web] hosts`` names."""
        bound = address.strip().strip("[]").lower()
        return cls(scheme, port, "" if bound in WILDCARD_ADDRESSES else bound,
                   frozenset(host_name(h) for h in configured))

    def _direct(self, name: str) -> bool:
        """Reached directly: loopback or the bound address (so with the page's own scheme and port)."""
        return is_loopback(name) or (bool(self.bound) and name == self.bound)

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's ``Host`` names this page (HTTP/1.1 requires the header; none is refused)."""
        if not host_header:
            return False
        name = host_name(host_header)
        return self._direct(name) or name in self.names

    def origin_allowed(self, origin: str) -> bool:
        """Whether a browser's ``Origin`` is this page: loopback or the bound address with the page's scheme and
        bound port, or a ``[web] hosts`` name (a proxy in front of it may use its own scheme and port)."""
        try:
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False
        name = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not name:
            return False
        if name in self.names:
            return True
        if not self._direct(name) or parts.scheme != self.scheme:
            return False
        return self.port is None or (port if port is not None else 443 if parts.scheme == "https" else 80) == self.port
