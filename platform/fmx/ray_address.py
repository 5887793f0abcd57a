"""Ray dashboard addresses and the Ray auth token, as fmx's Jobs API clients take them.

:func:`check_address` accepts ``http(s)://HOST:PORT`` (an IPv6 host in brackets) and refuses credentials in
the URL; :func:`find_auth_token` finds the token where Ray's own CLI does. Used by :mod:`fmx.cluster`.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Mapping

__all__ = ["check_address", "find_auth_token"]

_BLANK = " \t\n\r\f\v"  # what Ray's TrimWhitespace takes off a token; str.strip() would take Unicode spaces too


def check_address(address: str) -> str:
    if re.match(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://[^/\s]*@", address):  # user:password@ or a token as user@
        # masked: the message reaches the terminal and CI logs
        shown = re.sub(r"(?<=://)[^/\s]*@", "***@", address, count=1)
        raise ValueError(f"address={shown!r}: credentials never go in the address (user:password@); pass token= "
                         "or set RAY_AUTH_TOKEN to the cluster's token, and give http(s)://HOST:PORT")
    match = re.match(r"^https?://(?:\[(?P<ipv6>[^\]/\s]*)\]|[^/\s:\[\]]+)(?::\d+)?/?$", address)
    if not match or (match["ipv6"] is not None and not _is_ipv6(match["ipv6"])):
        raise ValueError(
            f"address={address!r} is not a Ray dashboard URL; expected http(s)://HOST:PORT, "
            f"for example http://127.0.0.1:8265 (an IPv6 host in brackets: http://[::1]:8265)"
        )
    return address.rstrip("/")


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def find_auth_token(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """The Ray auth token where Ray's own CLI finds it (``ray get-auth-token``), and its source (for messages).

    Ray's order (``AuthenticationTokenLoader::TryLoadTokenFromSources``, src/ray/rpc/authentication/
    authentication_token_loader.cc, Ray 2.60): ``RAY_AUTH_TOKEN`` when not empty; else the file named by
    ``RAY_AUTH_TOKEN_PATH`` (unreadable or empty: an error, not a reason to look further); else
    ``$HOME/.ray/auth_token`` (a local ``ray.init()`` writes it). A file gives its first line, trimmed. Ray's
    loader itself (``ray._raylet``) is private and caches its first token for the life of the process; its
    Kubernetes service-account step (``RAY_ENABLE_K8S_TOKEN_AUTH``, inside a pod) is left out.

    Returns
    -------
    (token, source)
        ``(None, None)`` when there is no token.

    Raises
    ------
    ValueError
        When ``RAY_AUTH_TOKEN_PATH`` names a file that cannot be read or is empty.
    """
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_TOKEN"):  # Ray stops here even when the value trims to nothing (then: no token)
        token = env["RAY_AUTH_TOKEN"].strip(_BLANK)
        return (token, "RAY_AUTH_TOKEN") if token else (None, None)
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path:
        token = _first_line(Path(path))
        if not token:
            raise ValueError(f"RAY_AUTH_TOKEN_PATH={path!r}: the file cannot be read or is empty; point it at the "
                             "file that holds the cluster's token, or unset it to use RAY_AUTH_TOKEN or "
                             "~/.ray/auth_token")
        return token, f"RAY_AUTH_TOKEN_PATH={path}"
    default = Path(env.get("HOME") or ".") / ".ray" / "auth_token"  # Ray reads $HOME, not the passwd entry
    token = _first_line(default)
    return (token, str(default)) if token else (None, None)


def _first_line(path: Path) -> str:
    """The file's text up to its first newline, trimmed (std::getline: a lone CR does not end the line)."""
    try:
        first = path.read_bytes().split(b"\n", 1)[0]
    except OSError:
        return ""
    return first.decode("utf-8", errors="replace").strip(_BLANK)
