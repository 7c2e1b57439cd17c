"""The account-linking domain, one module per API family: retailers, users, links, sandbox.

Handlers and the CLI both call these functions; they raise ``connectlink.errors`` and never
build HTTP responses.
"""
