"""A small retailer site that links its shoppers' Instacart accounts through ConnectLink.

It does what a retailer's integration does (connect-api.md sections 2 to 5): a profile page with
"Link Instacart Account", a fresh ``state`` and PKCE pair per attempt, both checked on return,
the code exchanged server-side, the Connect user linked, then the Instacart+ status shown.
Plain Starlette and httpx, so every request to ConnectLink is in plain sight.
"""

from storefront.app import StorefrontConfig, create_app

__all__ = ["StorefrontConfig", "create_app"]
