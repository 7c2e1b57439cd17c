"""Which redirect URIs a client may have (decisions.md "Clients made by the CLI"): checked
where a client is made or given a URI (``linking/retailers.py``), and again before the Login
pages redirect a browser to one, so that no URI stored some other way (an older version, a
snapshot) is ever a redirect's target."""

from __future__ import annotations

from urllib.parse import urlsplit

from connectlink import text

MAX_REDIRECT_URI = 2048  # what browsers and proxies reliably carry in a Location header
# RFC 8252 section 7.3: the hosts a native app's http redirect URI may name (urlsplit's spelling).
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_LOOPBACK = "localhost, 127.0.0.1 or [::1]"


def problem(uri: str) -> str | None:
    """Why ``uri`` may not be a redirect URI, or None if it may (decisions.md "Clients made by
    the CLI"): it must be an absolute ``https`` URI, or ``http`` on a loopback host (RFC 8252
    section 7.3), with no fragment (RFC 6749 section 3.1.2), no user info and no wildcard
    (RFC 9700 section 4.1.3), and no whitespace or control character."""
    said = f"redirect URI {uri!r}"
    if not text.clean(uri) or any(c.isspace() for c in uri) or len(uri) > MAX_REDIRECT_URI:
        return (f"{said} holds whitespace or control characters, or is over "
                f"{MAX_REDIRECT_URI} characters")
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return f"{said} is not a URI"
    scheme = parts.scheme.lower()
    if not scheme or not (parts.netloc or parts.path):
        return (f"{said} is not absolute: it needs a scheme, such as "
                "https://shop.example/callback (RFC 6749 section 3.1.2)")
    if scheme not in {"http", "https"}:
        return f"{said} is not https: a redirect URI is https, or http on {_LOOPBACK}"
    if not host:
        return f"{said} has no host"
    if scheme == "http" and host not in _LOOPBACK_HOSTS:
        return (f"{said} is http on a host that is not loopback: use https, or http on "
                f"{_LOOPBACK} (RFC 8252 section 7.3)")
    if "#" in uri:
        return f"{said} has a fragment, which RFC 6749 section 3.1.2 forbids"
    if "@" in parts.netloc:
        return f"{said} has user info, which a redirect URI may not carry (RFC 9700 section 4.1.3)"
    if "*" in uri:
        return (f"{said} has a wildcard: register each redirect URI in full, as it is compared "
                "character for character (RFC 9700 section 4.1.3)")
    return None
