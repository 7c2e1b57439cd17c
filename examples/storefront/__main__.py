"""``python -m storefront``: serve the example storefront (configured from the environment)."""

from __future__ import annotations

import os

import uvicorn

from storefront.app import StorefrontConfig, create_app


def main() -> None:
    config = StorefrontConfig(
        connect_url=os.environ.get("CONNECT_URL", "http://127.0.0.1:8080"),
        client_id=os.environ["CONNECT_CLIENT_ID"],
        client_secret=os.environ["CONNECT_CLIENT_SECRET"],
        redirect_uri=os.environ.get(
            "CONNECT_REDIRECT_URI", "http://localhost:3000/account/instacart/callback"),
    )
    uvicorn.run(create_app(config), host="127.0.0.1", port=int(os.environ.get("PORT", "3000")),
                log_level="warning")


if __name__ == "__main__":
    main()
