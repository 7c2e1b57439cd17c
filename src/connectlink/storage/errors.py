"""Setup mistakes, said in one line: a database that cannot be opened or reached, named by its
URL with any password masked (the line goes to terminals and logs)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# libpq reads these query parameters as credentials, as it does the URL's password.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


class DatabaseUnreachable(RuntimeError):
    """The database named cannot be opened or reached: it does not exist, its role does not, the
    password is wrong, the server does not answer, the SQLite path cannot be created or written.

    Its message is one line that names the cause and the (masked) URL. Not an ``OSError``: the
    engines read those as "gone for a moment, answer 503", and this is a setup mistake that
    waiting will not mend."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = masked_url(url)
        self.cause = cause.strip().splitlines()[0] if cause.strip() else "no reason given"
        super().__init__(f"cannot open the database {self.url}: {self.cause}")


def masked_url(url: str) -> str:
    """``postgresql://app:s3cret@db/x?password=y`` -> ``postgresql://app:***@db/x?password=***``;
    a URL without credentials is returned as it is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show its scheme only
        return url.split(":", 1)[0] + ":" + MASK
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(key in _SECRET_PARAMETERS for key, _ in pairs)
    if password is None and not secret_query:
        return url  # rebuilt, ``sqlite:///relative`` would lose a slash
    netloc, query = parts.netloc, parts.query
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
    if secret_query:
        query = urlencode(
            [(key, MASK if key in _SECRET_PARAMETERS else value) for key, value in pairs],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
