"""Retailers and their OAuth clients in SQL, for both engines: what the token endpoint looks up
on every request, and what an operator creates, lists and changes (``connectlink``)."""

from __future__ import annotations

import json

from connectlink.models import OAuthClient, Retailer
from connectlink.storage import records
from connectlink.storage.engine import Connection, SQLBase
from connectlink.storage.records import CLIENT_COLUMNS, Row

_RETAILER_COLUMNS = "id, name, created_at"


def _retailer(row: Row) -> Retailer:
    return Retailer(id=row[0], name=row[1], created_at=row[2])


class RetailerSQL(SQLBase):
    """The retailer and client verbs of ``Store``."""

    async def create_retailer(
        self, name: str, client: OAuthClient, now: float
    ) -> tuple[Retailer, OAuthClient]:
        async def create(db: Connection) -> tuple[Retailer, OAuthClient]:
            created = await db.fetchrow(
                "INSERT INTO retailers (name, created_at) VALUES (?, ?) RETURNING id", name, now
            )
            assert created is not None
            inserted = await self._insert_client(db, created[0], client, now)
            return Retailer(id=created[0], name=name, created_at=now), inserted

        return await self.db.write(create)

    async def create_client(
        self, retailer_id: int, client: OAuthClient, now: float
    ) -> OAuthClient | None:
        async def create(db: Connection) -> OAuthClient | None:
            if await db.fetchrow("SELECT 1 FROM retailers WHERE id = ?", retailer_id) is None:
                return None
            return await self._insert_client(db, retailer_id, client, now)

        return await self.db.write(create)

    async def _insert_client(
        self, db: Connection, retailer_id: int, client: OAuthClient, now: float
    ) -> OAuthClient:
        inserted = await db.fetchrow(
            "INSERT INTO oauth_clients (retailer_id, client_id, secret_digest, redirect_uris, "
            "grants, require_pkce, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            f"RETURNING {CLIENT_COLUMNS}",
            retailer_id, client.client_id, client.secret_digest,
            json.dumps(list(client.redirect_uris)), records.grants_text(client.grants),
            client.require_pkce, now,
        )
        assert inserted is not None
        return records.client(inserted)

    async def count_retailers(self) -> int:
        async with self.db.connection() as db:
            row = await db.fetchrow("SELECT count(*) FROM retailers")
        return int(row[0]) if row else 0

    async def get_retailer(self, retailer_id: int) -> Retailer | None:
        return await self._one(
            _retailer, f"SELECT {_RETAILER_COLUMNS} FROM retailers WHERE id = ?", retailer_id
        )

    async def list_retailers(self) -> list[Retailer]:
        async with self.db.connection() as db:
            rows = await db.fetch(f"SELECT {_RETAILER_COLUMNS} FROM retailers ORDER BY id")
        return [_retailer(row) for row in rows]

    async def get_client(self, client_id: str) -> OAuthClient | None:
        return await self._one(
            records.client, f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = ?",
            client_id,
        )

    async def get_client_by_pk(self, pk: int) -> OAuthClient | None:
        return await self._one(
            records.client, f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE pk = ?", pk
        )

    async def list_clients(self, retailer_id: int | None = None) -> list[OAuthClient]:
        async with self.db.connection() as db:
            if retailer_id is None:
                rows = await db.fetch(f"SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY pk")
            else:
                rows = await db.fetch(
                    f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE retailer_id = ? "
                    "ORDER BY pk",
                    retailer_id,
                )
        return [records.client(row) for row in rows]

    async def set_client_secret(self, client_id: str, secret_digest: bytes) -> OAuthClient | None:
        return await self._write_one(
            records.client,
            f"UPDATE oauth_clients SET secret_digest = ? WHERE client_id = ? "
            f"RETURNING {CLIENT_COLUMNS}",
            secret_digest, client_id,
        )

    async def add_redirect_uri(self, client_id: str, uri: str) -> OAuthClient | None:
        # Compare-and-set on the stored list, so two operators adding URIs at once both land
        # on either engine (a plain read-modify-write would drop one of them).
        while True:
            async with self.db.connection() as db:
                row = await db.fetchrow(
                    "SELECT pk, redirect_uris FROM oauth_clients WHERE client_id = ?", client_id
                )
            if row is None:
                return None
            pk, stored = row[0], row[1]
            uris = json.loads(stored)
            if uri in uris:
                return await self.get_client_by_pk(pk)
            updated = await self._write_one(
                records.client,
                "UPDATE oauth_clients SET redirect_uris = ? WHERE pk = ? AND redirect_uris = ? "
                f"RETURNING {CLIENT_COLUMNS}",
                json.dumps([*uris, uri]), pk, stored,
            )
            if updated is not None:
                return updated

    async def retailer_counts(self, retailer_id: int, now: float) -> tuple[int, int]:
        async with self.db.connection() as db:
            row = await db.fetchrow(
                "SELECT (SELECT count(*) FROM connect_users WHERE retailer_id = ? "
                "AND (purge_after IS NULL OR purge_after > ?)), "
                "(SELECT count(*) FROM links WHERE retailer_id = ?)",
                retailer_id, now, retailer_id,
            )
        assert row is not None
        return int(row[0]), int(row[1])
