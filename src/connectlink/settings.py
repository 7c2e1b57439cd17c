"""Settings: one frozen object, built from the environment in one place."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///var/connectlink.db"
DAY = 86_400
MIN_SECRET_KEY = 32


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


# The numeric settings read from CONNECTLINK_<NAME>; each must be more than 0.
_NUMBERS: dict[str, type[int] | type[float]] = {
    "pool_size": int, "privacy_retention": int, "header_timeout": float, "body_timeout": float,
    "shutdown_timeout": int,
}


# The rate limits (decisions.md "Rate limits"), in requests a second per client; 0 is off.
_RATES = ("rate_limit_token", "rate_limit_api")
# Production profile defaults; the emulator's are 0 (decisions.md "Profiles").
PRODUCTION_RATES = {"rate_limit_token": 20.0, "rate_limit_api": 100.0}
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
LOOPBACK = "127.0.0.1,::1"  # uvicorn's own default for whose proxy headers to believe


def _check_proxies(value: str) -> None:
    """``forwarded_allow_ips`` as uvicorn reads it: ``*``, or addresses and networks,
    comma-separated. uvicorn would take anything else for a literal that no peer ever matches,
    and say nothing."""
    if value.strip() == "*":
        return
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            ipaddress.ip_network(item) if "/" in item else ipaddress.ip_address(item)
        except ValueError as exc:
            raise ValueError("CONNECTLINK_FORWARDED_ALLOW_IPS must be * or IP addresses and "
                             f"networks, comma-separated: {exc}") from None


def _number(variable: str, value: str, kind: type[int] | type[float],
            wanted: str | None = None) -> int | float:
    try:
        return kind(value)
    except ValueError:
        wanted = wanted or ("a whole number" if kind is int else "a number of seconds")
        raise ValueError(f"{variable} must be {wanted}, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """How one ConnectLink server behaves. ``profile`` picks the defaults of the rest."""

    database_url: str = DEFAULT_DATABASE_URL
    profile: str = "emulator"  # "emulator" or "production"
    sandbox: bool = True
    access_log: bool = True
    # Prometheus counters and histograms, and ``GET /metrics``; off: neither (a 404).
    metrics: bool = True
    # How `serve` writes log lines: "text" or "json"; None: text on a terminal, else JSON.
    log_format: str | None = None
    max_body_bytes: int = 1024 * 1024
    access_token_ttl: int = DAY  # connect-api.md section 1: 24 hours
    linking_token_ttl: int = DAY
    code_ttl: int = 600  # decisions.md: 10 minutes
    privacy_retention: int = 30 * DAY
    # Seconds between retention sweeps (linking/retention.py), one sweeper at a time across
    # every worker and host; 0 turns the background sweeper off (`connectlink db sweep` runs
    # one by hand).
    sweep_interval: float = 3600.0
    pool_size: int = 10  # PostgreSQL connections per worker process
    # Signs the Login pages' session cookies. The emulator makes one on first start and keeps it
    # in the database; the production profile refuses to start without one.
    secret_key: str | None = field(default=None, repr=False)
    session_ttl: int = 12 * 3600  # decisions.md: a Login session lasts 12 hours
    # Slow clients: a request's headers must arrive within ``header_timeout`` seconds of its
    # first byte, and its body within ``body_timeout`` of the handler asking for it (408).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    # Token buckets per OAuth client (decisions.md "Rate limits"): requests a second, 0 is off;
    # shared through Redis (``redis_url``) by every worker and host that names the same one.
    rate_limit_token: float = 0.0
    rate_limit_api: float = 0.0
    redis_url: str | None = None
    redis_prefix: str = "connectlink:"
    # Whose X-Forwarded-For and X-Forwarded-Proto uvicorn believes (its forwarded_allow_ips):
    # loopback in the emulator, nobody ("") in production unless told.
    forwarded_allow_ips: str = LOOPBACK
    # Seconds the requests in flight at SIGTERM or SIGINT have to finish before they are cut.
    shutdown_timeout: int = 10
    # The emulator's admin plane (docs/emulator.md): a bearer token that opens it to callers
    # off the loopback interface, and how many journal entries each retailer keeps (0: none,
    # and a write less a request: about a fifth of GET link's throughput on SQLite).
    admin_token: str | None = field(default=None, repr=False)
    journal_size: int = 1000

    @property
    def emulated(self) -> bool:
        """The emulator profile: virtual clocks, faults, the journal and the admin plane."""
        return self.profile == "emulator"

    def __post_init__(self) -> None:
        if self.profile == "production" and not self.secret_key:
            raise ValueError(
                "the production profile needs CONNECTLINK_SECRET_KEY, a long random string "
                "that signs Login sessions; make one with: "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.profile == "production" and self.sandbox:  # decisions.md "Profiles": absent
            raise ValueError("the production profile has no sandbox endpoints; "
                             "CONNECTLINK_SANDBOX is for the emulator profile")
        if self.secret_key is not None and len(self.secret_key) < MIN_SECRET_KEY:
            raise ValueError(
                f"CONNECTLINK_SECRET_KEY must be at least {MIN_SECRET_KEY} characters long"
            )
        if self.admin_token is not None and len(self.admin_token) < MIN_SECRET_KEY:
            # A short token is guessable on --host 0.0.0.0, throttled or not.
            raise ValueError(
                f"CONNECTLINK_ADMIN_TOKEN must be at least {MIN_SECRET_KEY} characters long; "
                "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        for name in _NUMBERS:
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"CONNECTLINK_{name.upper()} must be more than 0, "
                                 f"not {getattr(self, name)}")
        for name in _RATES:
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"CONNECTLINK_{name.upper()} must be 0 (off) or more, "
                                 f"not {getattr(self, name)}")
        if self.journal_size < 0:
            raise ValueError("CONNECTLINK_JOURNAL_SIZE must be 0 (no journal) or more, "
                             f"not {self.journal_size}")
        if not math.isfinite(self.sweep_interval) or self.sweep_interval < 0:
            raise ValueError("CONNECTLINK_SWEEP_INTERVAL must be 0 (off) or more seconds, "
                             f"not {self.sweep_interval}")
        if self.log_format not in {None, "text", "json"}:
            raise ValueError(f"CONNECTLINK_LOG_FORMAT must be text or json, "
                             f"not {self.log_format!r}")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError("CONNECTLINK_REDIS_URL must be a redis://, rediss:// or unix:// "
                             "URL")
        _check_proxies(self.forwarded_allow_ips)

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> Settings:
        if profile not in {"emulator", "production"}:
            raise ValueError(f"unknown profile {profile!r} (emulator or production)")
        defaults: dict[str, Any] = {"sandbox": profile == "emulator"}
        if profile == "production":
            defaults.update(PRODUCTION_RATES, forwarded_allow_ips="")
        return cls(**{**defaults, **overrides, "profile": profile})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``CONNECTLINK_*`` variables; explicit ``overrides`` (CLI flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "CONNECTLINK_DATABASE_URL" in env:
            values["database_url"] = env["CONNECTLINK_DATABASE_URL"]
        if "CONNECTLINK_SANDBOX" in env:
            values["sandbox"] = _flag(env["CONNECTLINK_SANDBOX"])
        for name in ("access_log", "metrics"):
            if f"CONNECTLINK_{name.upper()}" in env:
                values[name] = _flag(env[f"CONNECTLINK_{name.upper()}"])
        if env.get("CONNECTLINK_LOG_FORMAT"):
            values["log_format"] = env["CONNECTLINK_LOG_FORMAT"].strip().lower()
        for name in ("secret_key", "admin_token"):
            if env.get(f"CONNECTLINK_{name.upper()}"):
                values[name] = env[f"CONNECTLINK_{name.upper()}"]
        for name in ("redis_url", "redis_prefix"):
            if env.get(f"CONNECTLINK_{name.upper()}"):
                values[name] = env[f"CONNECTLINK_{name.upper()}"]
        if "CONNECTLINK_FORWARDED_ALLOW_IPS" in env:  # set but empty: believe nobody
            values["forwarded_allow_ips"] = env["CONNECTLINK_FORWARDED_ALLOW_IPS"]
        for name in _RATES:
            variable = f"CONNECTLINK_{name.upper()}"
            if variable in env:
                values[name] = _number(variable, env[variable], float,
                                       "a number of requests a second (0: off)")
        for name, kind in _NUMBERS.items():
            variable = f"CONNECTLINK_{name.upper()}"
            if variable in env:
                values[name] = _number(variable, env[variable], kind)
        if "CONNECTLINK_JOURNAL_SIZE" in env:
            values["journal_size"] = _number("CONNECTLINK_JOURNAL_SIZE",
                                             env["CONNECTLINK_JOURNAL_SIZE"], int,
                                             "a whole number of requests (0: no journal)")
        if "CONNECTLINK_SWEEP_INTERVAL" in env:
            values["sweep_interval"] = _number("CONNECTLINK_SWEEP_INTERVAL",
                                               env["CONNECTLINK_SWEEP_INTERVAL"], float,
                                               "a number of seconds (0: off)")
        values.update({k: v for k, v in overrides.items() if v is not None})
        profile = values.pop("profile", None) or env.get("CONNECTLINK_PROFILE", "emulator")
        return cls.for_profile(profile, **values)

    def to_env(self) -> dict[str, str]:
        """The variables that rebuild these settings in a worker process."""
        secret = {"CONNECTLINK_SECRET_KEY": self.secret_key} if self.secret_key else {}
        if self.admin_token:
            secret["CONNECTLINK_ADMIN_TOKEN"] = self.admin_token
        redis = {"CONNECTLINK_REDIS_URL": self.redis_url} if self.redis_url else {}
        return secret | redis | {
            "CONNECTLINK_DATABASE_URL": self.database_url,
            "CONNECTLINK_PROFILE": self.profile,
            "CONNECTLINK_SANDBOX": "1" if self.sandbox else "0",
            "CONNECTLINK_ACCESS_LOG": "1" if self.access_log else "0",
            "CONNECTLINK_METRICS": "1" if self.metrics else "0",
            "CONNECTLINK_PRIVACY_RETENTION": str(self.privacy_retention),
            "CONNECTLINK_SWEEP_INTERVAL": repr(self.sweep_interval),
            "CONNECTLINK_POOL_SIZE": str(self.pool_size),
            "CONNECTLINK_HEADER_TIMEOUT": str(self.header_timeout),
            "CONNECTLINK_BODY_TIMEOUT": str(self.body_timeout),
            "CONNECTLINK_RATE_LIMIT_TOKEN": repr(self.rate_limit_token),
            "CONNECTLINK_RATE_LIMIT_API": repr(self.rate_limit_api),
            "CONNECTLINK_REDIS_PREFIX": self.redis_prefix,
            "CONNECTLINK_FORWARDED_ALLOW_IPS": self.forwarded_allow_ips,
            "CONNECTLINK_SHUTDOWN_TIMEOUT": str(self.shutdown_timeout),
            "CONNECTLINK_JOURNAL_SIZE": str(self.journal_size),
        }
