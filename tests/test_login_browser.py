"""The shopper's half of linking in real headless Chromium (Debian's, driven by Playwright):
from the storefront's "Link Instacart Account" through login and consent and back.

Screenshots of each page land in ``test-artifacts/``. Chromium comes from the system
(``CONNECTLINK_CHROMIUM``, default /usr/bin/chromium); without it these tests skip, except
under CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from storefront import StorefrontConfig, create_app

from conftest import make_emulator
from support import AppServer, Emulator, Retailer

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CONNECTLINK_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "correct horse battery"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for this module. Not for the session: Playwright's sync API keeps an event
    loop running on the main thread while it is open, which other modules' asyncio.run calls
    would trip over."""
    if not shutil.which(CHROMIUM):
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


class Store:
    """The example storefront, registered as a retailer of the emulator under test."""

    def __init__(self, emulator: Emulator) -> None:
        self.server = AppServer()
        self.url = self.server.url
        callback = f"{self.url}/account/instacart/callback"
        self.retailer: Retailer = emulator.retailer(callback)
        self.server.start(create_app(StorefrontConfig(
            emulator.server.url, self.retailer.client_id, self.retailer.client_secret,
            callback)))


def _world(database_url: str) -> Iterator[tuple[Emulator, Store]]:
    for emulator in make_emulator(database_url):
        store = Store(emulator)
        store.retailer.instacart_user("shopper@example.com", plus=True)
        try:
            yield emulator, store
        finally:
            store.server.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Emulator, Store]]:
    """On SQLite: the pages' storage rules run on both engines in test_login_pages.py."""
    yield from _world(f"sqlite:///{tmp_path / 'connectlink.db'}")


@pytest.fixture
def any_world(database_url: str) -> Iterator[tuple[Emulator, Store]]:
    """On each engine in turn."""
    yield from _world(database_url)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=PHONE)
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def start_linking(page: Any, store: Store) -> None:
    page.goto(f"{store.url}/profile")
    page.get_by_role("button", name="Link Instacart Account").click()
    page.wait_for_url("**/oauth/authorize?**")


def log_in(page: Any, email: str = "shopper@example.com", password: str = PASSWORD) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def expect(page: Any) -> Any:
    return playwright_sync.expect(page)


def test_link_from_the_storefront_at_phone_width(
    any_world: tuple[Emulator, Store], page: Any, database_url: str
) -> None:
    _, store = any_world
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    start_linking(page, store)
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in to Instacart")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, f"login-{engine}")
    log_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Allow Retailer 1 to access your Instacart account?")
    expect(page.get_by_text("Read your name and email")).to_be_visible()
    expect(page.get_by_text("Signed in as shopper@example.com.")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, f"consent-{engine}")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{store.url}/profile")
    expect(page.get_by_text("Linked to Instacart")).to_be_visible()
    expect(page.locator("#plus-status")).to_have_text(
        "Instacart+ member until 21 September 2027: your delivery is $0.")
    expect(page.get_by_role("button", name="Link Instacart Account")).to_have_count(0)
    shot(page, f"linked-{engine}")


def test_deny_tells_the_shopper_and_leaves_them_unlinked(
    world: tuple[Emulator, Store], page: Any
) -> None:
    _, store = world
    start_linking(page, store)
    log_in(page)
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{store.url}/profile")
    expect(page.get_by_role("status")).to_have_text(
        "You chose not to link your Instacart account. You can link it whenever you like.")
    expect(page.get_by_role("button", name="Link Instacart Account")).to_be_visible()


def test_a_wrong_password_is_reported_beside_the_form(
    world: tuple[Emulator, Store], page: Any
) -> None:
    _, store = world
    start_linking(page, store)
    log_in(page, password="not it")
    expect(page.get_by_role("alert")).to_have_text("Incorrect email or password.")
    expect(page.get_by_label("Email")).to_have_value("shopper@example.com")
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Password")).to_be_focused()
    shot(page, "login-error")
    log_in(page)
    expect(page.get_by_role("button", name="Allow")).to_be_visible()


def test_throttling_locks_an_account_then_an_address(
    world: tuple[Emulator, Store], page: Any
) -> None:
    emulator, store = world
    start_linking(page, store)
    for _ in range(5):  # the fifth locks the account here, and is still a failure
        log_in(page, password="not it")
        expect(page.get_by_role("alert")).to_have_text("Incorrect email or password.")
    log_in(page)  # the right password, not checked
    expect(page.get_by_role("heading", level=1)).to_have_text("Too many sign-in attempts")
    expect(page.get_by_text("You can try again at 14:28 UTC on 21 September 2026")
           ).to_be_visible()
    shot(page, "throttled")
    emulator.clock.advance(15 * 60)  # the account's lock ends, its failures age out
    start_linking(page, store)
    for n in range(30):  # three failures each for ten accounts, all from this address
        log_in(page, email=f"guess{n % 10}@example.com", password="not it")
    expect(page.get_by_role("alert")).to_have_text("Incorrect email or password.")  # the 30th
    log_in(page, email="another@example.com", password="not it")
    expect(page.get_by_role("heading", level=1)).to_have_text("Too many sign-in attempts")
    start_linking(page, store)
    log_in(page)  # the right password, from a locked address
    expect(page.get_by_role("heading", level=1)).to_have_text("Too many sign-in attempts")


def test_a_replayed_callback_is_reported_cleanly(
    world: tuple[Emulator, Store], page: Any
) -> None:
    _, store = world
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "/callback?" in r.url else None)
    start_linking(page, store)
    log_in(page)
    page.get_by_role("button", name="Allow").click()
    expect(page.get_by_text("Linked to Instacart")).to_be_visible()
    page.goto(callbacks[0])  # the code, used once already
    expect(page.get_by_role("alert")).to_contain_text("This link attempt is no longer valid")
    expect(page.get_by_text("Linked to Instacart")).to_be_visible()  # nothing undone


def allow_but_hold(page: Any) -> str:
    """Click Allow, but keep the browser from following the redirect back to the store: the
    callback URL, to visit later (after moving the clock, or stopping ConnectLink)."""
    held: list[str] = []

    def hold(route: Any) -> None:
        answer = route.fetch(max_redirects=0)
        held.append(answer.headers["location"])
        route.fulfill(status=204)  # a navigation answered 204 leaves the page as it is

    page.route("**/oauth/authorize", hold)
    page.get_by_role("button", name="Allow").click()
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(20)
    page.unroute("**/oauth/authorize")
    return held[0]


def test_an_expired_code_and_a_server_error_are_reported_cleanly(
    world: tuple[Emulator, Store], page: Any
) -> None:
    emulator, store = world
    start_linking(page, store)
    log_in(page)
    callback = allow_but_hold(page)
    emulator.clock.advance(601)  # past the code's ten minutes
    page.goto(callback)
    expect(page.get_by_role("alert")).to_have_text(
        "That Instacart authorization has expired or was already used. "
        "Please try linking again.")
    assert "Traceback" not in page.content()
    # Instacart unreachable in the middle of a link.
    page.get_by_role("button", name="Link Instacart Account").click()
    callback = allow_but_hold(page)
    emulator.server.stop()
    page.goto(callback)
    expect(page.get_by_role("alert").first).to_have_text(
        "We could not reach Instacart just now. Please try again in a few minutes.")
    shot(page, "storefront-error")


def test_a_form_without_its_csrf_token_is_refused(
    world: tuple[Emulator, Store], page: Any
) -> None:
    _, store = world
    start_linking(page, store)
    page.locator('form[action="/oauth/sign_in"] input[name="csrf_token"]').evaluate(
        "input => input.remove()")
    log_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("This form has expired")
    assert page.evaluate("fetch(location.href).then(r => r.status)") in (403, 405)


def test_an_unregistered_redirect_uri_is_never_followed(
    world: tuple[Emulator, Store], page: Any
) -> None:
    emulator, store = world
    visited: list[str] = []
    page.on("request", lambda r: visited.append(r.url))
    response = page.goto(
        f"{emulator.server.url}/oauth/authorize?response_type=code&client_id="
        f"{store.retailer.client_id}&redirect_uri=https://evil.example/cb&state=s")
    assert response.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("This link is not valid")
    shot(page, "error")
    assert not [url for url in visited if urlsplit(url).hostname == "evil.example"]
    assert page.url.startswith(emulator.server.url)


def test_an_unknown_client_is_an_error_page(world: tuple[Emulator, Store], page: Any) -> None:
    emulator, _ = world
    response = page.goto(f"{emulator.server.url}/oauth/authorize?response_type=code"
                         "&client_id=nobody&redirect_uri=https://shop.example/cb")
    assert response.status == 400
    expect(page.get_by_text("invalid_client")).to_be_visible()


@pytest.mark.parametrize(("query", "error"), [
    ("response_type=token", "unsupported_response_type"),
    ("response_type=code&scope=connect:fulfillment", "invalid_scope"),
    ("response_type=code&code_challenge=short", "invalid_request"),
    ("response_type=code&code_challenge_method=S256", "invalid_request"),
    ("response_type=code", "access_denied"),
])
def test_redirectable_errors_arrive_at_the_redirect_uri_with_state(
    world: tuple[Emulator, Store], page: Any, query: str, error: str
) -> None:
    emulator, store = world
    arrived: list[str] = []
    page.on("request", lambda r: arrived.append(r.url) if "/callback?" in r.url else None)
    page.goto(f"{emulator.server.url}/oauth/authorize?{query}&client_id="
              f"{store.retailer.client_id}&redirect_uri={store.url}/account/instacart/callback"
              "&state=opaque-123")
    if error == "access_denied":
        log_in(page)
        page.get_by_role("button", name="Deny").click()
    page.wait_for_url(f"{store.url}/profile")  # the store reports it (state is not its own)
    assert arrived[0].startswith(f"{store.url}/account/instacart/callback?error={error}&")
    assert arrived[0].endswith("&state=opaque-123")


def test_keyboard_only(world: tuple[Emulator, Store], page: Any) -> None:
    _, store = world
    start_linking(page, store)
    expect(page.get_by_label("Email")).to_be_focused()  # autofocus: start typing
    page.keyboard.type("shopper@example.com")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Allow")).to_be_visible()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Allow":
            break
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # visible focus
    page.keyboard.press("Enter")
    page.wait_for_url(f"{store.url}/profile")
    expect(page.get_by_text("Linked to Instacart")).to_be_visible()
