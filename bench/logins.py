"""Does the API keep answering while the Login pages check passwords?

Starts ``connectlink serve`` (one worker, SQLite, as ``make run`` does) on 127.0.0.1, links one
Connect user, then times ``GET /v2/fulfillment/users/{id}/link`` one request at a time: first
alone, then with 10 shoppers signing in continuously (argon2id checks, run off the event loop).
Bounded: a fixed number of requests per phase. Prints p50, p99 and max in milliseconds.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REDIRECT_URI = "https://shop.example/callback"
PASSWORD = "bench password"
SAMPLES = 400
SHOPPERS = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "connectlink", *args], check=True,
                          capture_output=True, text=True).stdout


def timings(http: httpx.Client, path: str, headers: dict[str, str]) -> list[float]:
    taken = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        assert http.get(path, headers=headers).status_code == 200
        taken.append((time.perf_counter() - started) * 1000)
    return taken


def summary(name: str, taken: list[float]) -> str:
    ordered = sorted(taken)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (f"| {name} | {len(taken)} | {statistics.median(ordered):.2f} | {p99:.2f} | "
            f"{ordered[-1]:.2f} |")


def sign_in_loop(base: str, params: dict[str, str], email: str, stop: threading.Event,
                 count: list[int]) -> None:
    with httpx.Client(base_url=base) as browser:
        while not stop.is_set():
            page = browser.get("/oauth/authorize", params=params)
            found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            if found is None:  # signed in already: sign out to sign in again
                browser.cookies.clear()
                continue
            answer = browser.post("/oauth/sign_in", data={
                **params, "csrf_token": found.group(1), "email": email, "password": PASSWORD})
            assert answer.status_code == 303, answer.status_code
            count[0] += 1
            browser.cookies.clear()


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="connectlink-logins-"))
    database = f"sqlite:///{folder / 'db.sqlite'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "connectlink", "serve", "--migrate", "--no-demo", "--port",
         str(port), "--database", database], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=base) as http:
            for _ in range(200):  # serve --migrate creates the schema, then listens
                try:
                    http.get("/oauth/assets/connectlink.css")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            created = json.loads(cli("retailers", "create", "--name", "Bench",
                                     "--redirect-uri", REDIRECT_URI, "--database", database,
                                     "--json"))
            credentials = {key: created[key] for key in ("client_id", "client_secret")}
            token = http.post("/v2/oauth/token", json={
                "grant_type": "client_credentials", **credentials}).json()["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}
            emails = [f"shopper{n}@example.com" for n in range(SHOPPERS)]
            for email in emails:
                http.post("/v2/fulfillment_sandbox/instacart_users", headers=bearer, json={
                    "email": email, "phone": "+18005550100", "password": PASSWORD,
                    "instacartplus_member": True}).raise_for_status()
            code = http.post("/v2/fulfillment_sandbox/instacart_users/1/authorize",
                             headers=bearer, json={"redirect_uri": REDIRECT_URI,
                                                   "scope": "account_linking"}).json()["code"]
            linking = http.post("/v2/oauth/token", json={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                **credentials}).json()["access_token"]
            http.post("/v2/fulfillment/users", headers=bearer,
                      json={"user_id": "u1", "first_name": "Bench"}).raise_for_status()
            http.post("/v2/fulfillment/users/u1/link", headers=bearer,
                      json={"linking_token": linking}).raise_for_status()
            path = "/v2/fulfillment/users/u1/link"
            timings(http, path, bearer)  # warm up
            alone = timings(http, path, bearer)
            params = {"response_type": "code", "client_id": credentials["client_id"],
                      "redirect_uri": REDIRECT_URI}
            stop, count = threading.Event(), [0]
            shoppers = [threading.Thread(target=sign_in_loop, args=(base, params, email, stop,
                                                                    count)) for email in emails]
            for shopper in shoppers:
                shopper.start()
            time.sleep(1)
            started, before = time.perf_counter(), count[0]
            busy = timings(http, path, bearer)
            signed_in = (count[0] - before) / (time.perf_counter() - started)
            stop.set()
            for shopper in shoppers:
                shopper.join()
        print("| GET link, sequential | requests | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        print(summary("no logins in flight", alone))
        print(summary(f"{SHOPPERS} logins in flight ({signed_in:.0f} sign-ins/s)", busy))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
