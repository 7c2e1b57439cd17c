"""The ``Store`` on embedded SQLite (stdlib ``sqlite3``, WAL).

Calls run on the event loop's thread: a statement on a local WAL database takes microseconds,
less than a hop to a worker thread would. Each write is one ``BEGIN IMMEDIATE`` transaction with
no ``await`` inside it, so the rules below hold between coroutines and between processes.

Durability: ``synchronous=NORMAL`` in WAL mode survives a crash of the process (the commit is in
the WAL before the response is written); a power cut may lose the last commits. Set
``CONNECTLINK_SQLITE_SYNCHRONOUS=FULL`` to fsync every commit.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from connectlink.models import (
    AccessToken,
    AuthorizationCode,
    ConnectUser,
    InstacartAccount,
    LinkOutcome,
    OAuthClient,
    Retailer,
    RevokeOutcome,
    UserFields,
)

_TOKEN_COLUMNS = (
    "digest, client_pk, retailer_id, scopes, created_at, expires_at, account_id, code_digest, "
    "revoked_at, consumed_at"
)
_CODE_COLUMNS = (
    "digest, client_pk, retailer_id, account_id, redirect_uri, scopes, created_at, expires_at, "
    "code_challenge, code_challenge_method, consumed_at"
)
_USER_COLUMNS = (
    "pk, retailer_id, user_id, first_name, last_name, phone_number, locale, active, purge_after"
)
_CLIENT_COLUMNS = "pk, retailer_id, client_id, secret_digest, redirect_uris, grants, require_pkce"
_ACCOUNT_COLUMNS = "id, email, phone, membership_expires_at, created_at"


def path_from_url(url: str) -> str:
    """``sqlite:///var/db.sqlite`` -> ``var/db.sqlite``; ``sqlite:////abs`` -> ``/abs``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to.db)")
    return url[len(prefix):]


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) for every schema file, in order."""
    folder = resources.files("connectlink.storage") / "sql" / "sqlite"
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


def _scopes(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _join(scopes: frozenset[str]) -> str:
    return " ".join(sorted(scopes))


def _token(row: tuple[Any, ...]) -> AccessToken:
    return AccessToken(
        digest=row[0], client_pk=row[1], retailer_id=row[2], scopes=_scopes(row[3]),
        created_at=row[4], expires_at=row[5], account_id=row[6], code_digest=row[7],
        revoked_at=row[8], consumed_at=row[9],
    )


def _code(row: tuple[Any, ...]) -> AuthorizationCode:
    return AuthorizationCode(
        digest=row[0], client_pk=row[1], retailer_id=row[2], account_id=row[3],
        redirect_uri=row[4], scopes=_scopes(row[5]), created_at=row[6], expires_at=row[7],
        code_challenge=row[8], code_challenge_method=row[9], consumed_at=row[10],
    )


def _user(row: tuple[Any, ...]) -> ConnectUser:
    return ConnectUser(
        pk=row[0], retailer_id=row[1], user_id=row[2], first_name=row[3], last_name=row[4],
        phone_number=row[5], locale=row[6], active=bool(row[7]), purge_after=row[8],
    )


def _client(row: tuple[Any, ...]) -> OAuthClient:
    return OAuthClient(
        pk=row[0], retailer_id=row[1], client_id=row[2], secret_digest=row[3],
        redirect_uris=tuple(json.loads(row[4])),
        grants={grant: frozenset(s) for grant, s in json.loads(row[5]).items()},
        require_pkce=bool(row[6]),
    )


def _account(row: tuple[Any, ...]) -> InstacartAccount:
    return InstacartAccount(
        id=row[0], email=row[1], phone=row[2], membership_expires_at=row[3], created_at=row[4]
    )


class SQLiteStore:
    """One connection per process; see the module docstring for why that is enough."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        synchronous = os.environ.get("CONNECTLINK_SQLITE_SYNCHRONOUS", "NORMAL")
        if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"CONNECTLINK_SQLITE_SYNCHRONOUS={synchronous!r}")
        for pragma in (
            "journal_mode = WAL",
            f"synchronous = {synchronous}",
            "foreign_keys = ON",
            "busy_timeout = 10000",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._migrate()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(path_from_url(url))

    def _migrate(self) -> None:
        with self._write():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            done = {v for (v,) in self._db.execute("SELECT version FROM schema_migrations")}
            for version, sql in migrations():
                if version in done:
                    continue
                for statement in sql.split(";\n"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO schema_migrations VALUES (?, strftime('%s', 'now'))", (version,)
                )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the lock is taken up front so it never has to upgrade."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
        return row

    def _audit(
        self, retailer_id: int, now: float, action: str, user_id: str, account_id: int | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO audit_events (retailer_id, occurred_at, action, user_id, account_id, "
            "detail) VALUES (?, ?, ?, ?, ?, ?)",
            (retailer_id, now, action, user_id, account_id,
             json.dumps(detail) if detail else None),
        )

    async def close(self) -> None:
        self._db.close()

    # retailers and clients ----
    async def create_retailer(
        self, name: str, client: OAuthClient, now: float
    ) -> tuple[Retailer, OAuthClient]:
        with self._write() as db:
            retailer_id = db.execute(
                "INSERT INTO retailers (name, created_at) VALUES (?, ?) RETURNING id", (name, now)
            ).fetchone()[0]
            grants = {grant: sorted(scopes) for grant, scopes in client.grants.items()}
            pk = db.execute(
                "INSERT INTO oauth_clients (retailer_id, client_id, secret_digest, redirect_uris, "
                "grants, require_pkce, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING pk",
                (retailer_id, client.client_id, client.secret_digest,
                 json.dumps(list(client.redirect_uris)), json.dumps(grants),
                 int(client.require_pkce), now),
            ).fetchone()[0]
        retailer = Retailer(id=retailer_id, name=name, created_at=now)
        return retailer, OAuthClient(
            pk=pk, retailer_id=retailer_id, client_id=client.client_id,
            secret_digest=client.secret_digest, redirect_uris=client.redirect_uris,
            grants=client.grants, require_pkce=client.require_pkce,
        )

    async def count_retailers(self) -> int:
        row = self._one("SELECT count(*) FROM retailers", ())
        return int(row[0]) if row else 0

    async def get_client(self, client_id: str) -> OAuthClient | None:
        row = self._one(f"SELECT {_CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = ?",
                        (client_id,))
        return _client(row) if row else None

    async def get_client_by_pk(self, pk: int) -> OAuthClient | None:
        row = self._one(f"SELECT {_CLIENT_COLUMNS} FROM oauth_clients WHERE pk = ?", (pk,))
        return _client(row) if row else None

    # tokens ----
    def _insert_token(self, token: AccessToken) -> None:
        self._db.execute(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (token.digest, token.client_pk, token.retailer_id, _join(token.scopes),
             token.created_at, token.expires_at, token.account_id, token.code_digest,
             token.revoked_at, token.consumed_at),
        )

    async def save_token(self, token: AccessToken) -> None:
        self._insert_token(token)  # one statement: SQLite makes it its own transaction

    async def get_token(self, digest: bytes) -> AccessToken | None:
        row = self._one(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE digest = ?", (digest,))
        return _token(row) if row else None

    async def revoke_token(self, digest: bytes, client_pk: int, now: float) -> RevokeOutcome:
        with self._write() as db:
            row = db.execute("SELECT client_pk FROM tokens WHERE digest = ?", (digest,)).fetchone()
            if row is None:
                return RevokeOutcome.UNKNOWN
            if row[0] != client_pk:
                return RevokeOutcome.FOREIGN
            db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE digest = ? AND revoked_at IS NULL",
                (now, digest),
            )
        return RevokeOutcome.REVOKED

    # authorization codes ----
    async def save_code(self, code: AuthorizationCode) -> None:
        self._db.execute(
            f"INSERT INTO authorization_codes ({_CODE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (code.digest, code.client_pk, code.retailer_id, code.account_id, code.redirect_uri,
             _join(code.scopes), code.created_at, code.expires_at, code.code_challenge,
             code.code_challenge_method, code.consumed_at),
        )

    async def redeem_code(
        self,
        digest: bytes,
        client_pk: int,
        now: float,
        check: Callable[[AuthorizationCode], AccessToken],
    ) -> AccessToken | None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                f"UPDATE authorization_codes SET consumed_at = ? WHERE digest = ? "
                f"AND client_pk = ? AND consumed_at IS NULL RETURNING {_CODE_COLUMNS}",
                (now, digest, client_pk),
            ).fetchone()
            if row is None:
                # A replay: the token the first redemption produced must not outlive it.
                db.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE code_digest = ? AND client_pk = ? "
                    "AND consumed_at IS NULL AND revoked_at IS NULL",
                    (now, digest, client_pk),
                )
                db.execute("COMMIT")
                return None
            try:
                token = check(_code(row))
            except Exception:
                db.execute("COMMIT")  # the failed attempt still uses the code up
                raise
            self._insert_token(token)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return token

    # Connect users ----
    async def upsert_connect_user(
        self, retailer_id: int, fields: UserFields, now: float
    ) -> ConnectUser:
        with self._write() as db:
            # A user purged after a privacy request is gone: its id starts afresh.
            db.execute(
                "DELETE FROM connect_users WHERE retailer_id = ? AND user_id = ? "
                "AND purge_after <= ?",
                (retailer_id, fields.user_id, now),
            )
            row = db.execute(
                "INSERT INTO connect_users (retailer_id, user_id, first_name, last_name, "
                "phone_number, locale, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (retailer_id, user_id) DO UPDATE SET "
                "first_name = excluded.first_name, "
                "last_name = coalesce(excluded.last_name, last_name), "
                "phone_number = coalesce(excluded.phone_number, phone_number), "
                "locale = coalesce(excluded.locale, locale), "
                f"updated_at = excluded.updated_at RETURNING {_USER_COLUMNS}",
                (retailer_id, fields.user_id, fields.first_name, fields.last_name,
                 fields.phone_number, fields.locale, now, now),
            ).fetchone()
        return _user(row)

    async def get_connect_user(
        self, retailer_id: int, user_id: str, now: float
    ) -> ConnectUser | None:
        row = self._one(
            f"SELECT {_USER_COLUMNS} FROM connect_users WHERE retailer_id = ? AND user_id = ? "
            "AND (purge_after IS NULL OR purge_after > ?)",
            (retailer_id, user_id, now),
        )
        return _user(row) if row else None

    async def deactivate_connect_user(
        self, user: ConnectUser, now: float, purge_after: float, reason: str
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE connect_users SET active = 0, purge_after = ?, updated_at = ? "
                "WHERE pk = ?",
                (purge_after, now, user.pk),
            )
            dropped = db.execute(
                "DELETE FROM links WHERE connect_user_pk = ? RETURNING account_id", (user.pk,)
            ).fetchone()
            self._audit(user.retailer_id, now, reason, user.user_id,
                        dropped[0] if dropped else None)
            # Purge what is past its retention, so deleted data does not linger.
            db.execute("DELETE FROM connect_users WHERE purge_after <= ?", (now,))

    # links ----
    async def link(
        self, user: ConnectUser, token_digest: bytes, now: float, banner: str | None
    ) -> LinkOutcome:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            outcome = self._link(user, token_digest, now, banner)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT" if outcome in _LINKED else "ROLLBACK")
        return outcome

    def _link(
        self, user: ConnectUser, token_digest: bytes, now: float, banner: str | None
    ) -> LinkOutcome:
        db = self._db
        token = db.execute(
            "UPDATE tokens SET consumed_at = ? WHERE digest = ? AND retailer_id = ? "
            "AND account_id IS NOT NULL AND consumed_at IS NULL AND revoked_at IS NULL "
            "AND expires_at > ? RETURNING account_id",
            (now, token_digest, user.retailer_id, now),
        ).fetchone()
        if token is None:
            return LinkOutcome.TOKEN_INVALID
        account_id = token[0]
        previous = db.execute(
            "SELECT account_id FROM links WHERE connect_user_pk = ?", (user.pk,)
        ).fetchone()
        try:
            written = db.execute(
                "INSERT INTO links (connect_user_pk, retailer_id, account_id, linked_at) "
                "SELECT ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM connect_users WHERE pk = ? AND active = 1) "
                "ON CONFLICT (connect_user_pk) DO UPDATE SET "
                "account_id = excluded.account_id, linked_at = excluded.linked_at",
                (user.pk, user.retailer_id, account_id, now, user.pk),
            ).rowcount
        except sqlite3.IntegrityError:
            return LinkOutcome.ACCOUNT_TAKEN
        if written == 0:
            return LinkOutcome.USER_INACTIVE
        outcome = (
            LinkOutcome.LINKED if previous is None
            else LinkOutcome.RELINKED if previous[0] == account_id
            else LinkOutcome.REPLACED
        )
        detail: dict[str, Any] = {}
        if outcome is LinkOutcome.REPLACED:
            detail["replaced_account_id"] = previous[0] if previous else None
        if banner:
            detail["banner"] = banner
        self._audit(user.retailer_id, now, outcome.value, user.user_id, account_id, detail)
        return outcome

    async def unlink(self, user: ConnectUser, now: float, reason: str) -> bool:
        with self._write() as db:
            dropped = db.execute(
                "DELETE FROM links WHERE connect_user_pk = ? RETURNING account_id", (user.pk,)
            ).fetchone()
            if dropped is not None:
                self._audit(user.retailer_id, now, "unlink", user.user_id, dropped[0],
                            {"reason": reason})
        return dropped is not None

    async def linked_account(self, user: ConnectUser) -> InstacartAccount | None:
        row = self._one(
            "SELECT a.id, a.email, a.phone, a.membership_expires_at, a.created_at "
            "FROM links l JOIN instacart_accounts a ON a.id = l.account_id "
            "WHERE l.connect_user_pk = ?",
            (user.pk,),
        )
        return _account(row) if row else None

    # Instacart accounts ----
    async def create_instacart_account(
        self, email: str, phone: str, password_hash: str, membership_expires_at: float | None,
        now: float,
    ) -> InstacartAccount | None:
        try:
            row = self._one(
                "INSERT INTO instacart_accounts (email, phone, password_hash, "
                "membership_expires_at, created_at) VALUES (?, ?, ?, ?, ?) "
                f"RETURNING {_ACCOUNT_COLUMNS}",
                (email, phone, password_hash, membership_expires_at, now),
            )
        except sqlite3.IntegrityError:
            return None
        return _account(row) if row else None

    async def get_instacart_account(self, account_id: int) -> InstacartAccount | None:
        row = self._one(
            f"SELECT {_ACCOUNT_COLUMNS} FROM instacart_accounts WHERE id = ?", (account_id,)
        )
        return _account(row) if row else None

    async def audit_trail(self, retailer_id: int) -> list[tuple[float, str, str, int | None]]:
        return [
            (at, action, user_id, account_id)
            for at, action, user_id, account_id in self._db.execute(
                "SELECT occurred_at, action, user_id, account_id FROM audit_events "
                "WHERE retailer_id = ? ORDER BY id",
                (retailer_id,),
            )
        ]


_LINKED = frozenset({LinkOutcome.LINKED, LinkOutcome.RELINKED, LinkOutcome.REPLACED})
