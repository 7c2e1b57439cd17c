"""The web layer: the only part of ConnectLink that knows Starlette."""
