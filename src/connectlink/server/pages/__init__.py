"""The "Login with Instacart" pages (connect-api.md section 2, decisions.md "Login with
Instacart"): the shopper's sign-in and consent, server-rendered, usable without JavaScript."""
