"""Schema migrations: a database made at version 1, with data in it, upgrades without loss."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import START, make_emulator
from connectlink import security
from connectlink.clock import ManualClock
from connectlink.linking import retailers
from connectlink.models import AccessToken, UserFields
from connectlink.storage import Schema, Store, migrations, open_store, using_store
from support import engine_of, execute_sql


def _with(url: str, action: Any, schema: Schema = "as-is") -> Any:
    return using_store(url, action, schema)


async def _fill_version_1(store: Store) -> dict[str, Any]:
    assert await migrations.upgrade(store, target=1) == [1]
    clock = ManualClock(START)
    shop = await retailers.create(store, clock, "Old Shop", ["https://old.example/cb"])
    account = await store.create_instacart_account("old@example.com", "1", "hash", START + 1e6,
                                                   START)
    assert account is not None
    user = await store.upsert_connect_user(shop.retailer.id, UserFields("42", "Ann"), START)
    bearer = security.new_secret()
    await store.save_token(AccessToken(security.digest(bearer), shop.client.pk, shop.retailer.id,
                                       frozenset({"connect:fulfillment"}), START, START + 86400))
    return {"shop": shop, "account": account, "user": user, "bearer": bearer}


def test_upgrade_from_version_1_keeps_the_data(database_url: str) -> None:
    before = asyncio.run(_with(database_url, _fill_version_1))
    # a link as version 1 wrote it (no banner column yet)
    execute_sql(database_url,
                "INSERT INTO links (connect_user_pk, retailer_id, account_id, linked_at) VALUES "
                f"({before['user'].pk}, {before['shop'].retailer.id}, {before['account'].id}, "
                f"{START})")
    with pytest.raises(migrations.SchemaOutOfDate, match="at version 1, this ConnectLink needs"):
        asyncio.run(_with(database_url, lambda store: store.count_retailers(), "check"))

    applied = asyncio.run(_with(database_url, migrations.upgrade))
    assert applied == [m.version for m in migrations.available(engine_of(database_url))][1:]

    async def read(store: Store) -> tuple[Any, ...]:
        shop = before["shop"]
        return (
            await store.get_client(shop.client.client_id),
            await store.get_connect_user(shop.retailer.id, "42", START),
            await store.find_link(shop.retailer.id, "42", START),
            await store.get_token(security.digest(before["bearer"])),
        )

    client, user, linked, token = asyncio.run(_with(database_url, read, "check"))
    assert client == before["shop"].client
    assert user == before["user"]
    assert linked == (before["user"], before["account"])
    assert token is not None and token.scopes == frozenset({"connect:fulfillment"})

    # and the upgraded database serves: the old user links through the API
    for emulator in make_emulator(database_url):
        shop = emulator.retailer()
        account = shop.instacart_user("new@example.com")
        shop.create_user("7")
        assert shop.link("7", shop.linking_token(account)).status_code == 200
        old_bearer = {"Authorization": f"Bearer {before['bearer']}"}
        response = emulator.http.get("/v2/fulfillment/users/42/link", headers=old_bearer)
        assert response.json()["instacartplus_member"] is True


def test_a_newer_schema_is_refused(database_url: str) -> None:
    asyncio.run(_with(database_url, migrations.upgrade))
    execute_sql(database_url, "INSERT INTO schema_migrations (version, name, applied_at) "
                              "VALUES (999, 'from_the_future', 0)")
    with pytest.raises(migrations.SchemaOutOfDate, match="newer than this ConnectLink knows"):
        asyncio.run(_with(database_url, lambda store: store.count_retailers(), "check"))


def test_concurrent_upgrades_apply_each_migration_once(database_url: str) -> None:
    async def race() -> list[list[int]]:
        stores = [await open_store(database_url, "as-is") for _ in range(4)]
        try:
            return list(await asyncio.gather(*(migrations.upgrade(s) for s in stores)))
        finally:
            for store in stores:
                await store.close()

    results = asyncio.run(race())
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in migrations.available(engine_of(database_url))]

