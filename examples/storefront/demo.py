"""``make demo``: ConnectLink and the example storefront together, ready to click through.

Starts ``connectlink serve`` on a fresh SQLite database (``var/demo.db``), registers the
storefront as a retailer, makes an Instacart+ sandbox shopper, serves the storefront on
http://localhost:3000, and prints where to go and how to log in. Ctrl-C stops both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import uvicorn

from storefront import StorefrontConfig, create_app

CONNECT_PORT = int(os.environ.get("CONNECT_PORT", "8080"))
STORE_PORT = int(os.environ.get("STORE_PORT", "3000"))
CONNECT_URL = f"http://127.0.0.1:{CONNECT_PORT}"
STORE_URL = f"http://localhost:{STORE_PORT}"  # the host the redirect URI names
REDIRECT_URI = f"{STORE_URL}/account/instacart/callback"
DATABASE = Path("var/demo.db")
EMAIL, PASSWORD = "shopper@example.com", "instacart-demo"


def connectlink(*args: str) -> list[str]:
    return [sys.executable, "-m", "connectlink", *args]


def wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if server.poll() is not None:
            sys.exit("connectlink serve stopped; see its output above")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    sys.exit(f"connectlink serve did not answer at {url}")


def main() -> None:
    DATABASE.parent.mkdir(exist_ok=True)
    for stale in DATABASE.parent.glob(DATABASE.name + "*"):
        stale.unlink()  # a demo starts from nothing
    database = f"sqlite:///{DATABASE}"
    server = subprocess.Popen(connectlink(
        "serve", "--migrate", "--no-demo", "--port", str(CONNECT_PORT), "--database", database))
    try:
        wait_for(f"{CONNECT_URL}/oauth/assets/connectlink.css", server)
        credentials = json.loads(subprocess.run(connectlink(
            "retailers", "create", "--name", "The Garden", "--redirect-uri", REDIRECT_URI,
            "--database", database, "--json"), check=True, capture_output=True).stdout)
        token = httpx.post(f"{CONNECT_URL}/v2/oauth/token", json={
            "grant_type": "client_credentials", "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"]}).json()["access_token"]
        httpx.post(f"{CONNECT_URL}/v2/fulfillment_sandbox/instacart_users",
                   headers={"Authorization": f"Bearer {token}"},
                   json={"email": EMAIL, "phone": "+18005550100", "password": PASSWORD,
                         "instacartplus_member": True}).raise_for_status()
        print(f"\n  The storefront:      {STORE_URL}/profile")
        print(f"  Log in to Instacart: {EMAIL} / {PASSWORD}")
        print(f"  ConnectLink:         {CONNECT_URL}  (database {DATABASE})\n", flush=True)
        app = create_app(StorefrontConfig(CONNECT_URL, credentials["client_id"],
                                          credentials["client_secret"], REDIRECT_URI))
        uvicorn.run(app, host="127.0.0.1", port=STORE_PORT, log_level="warning")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
