"""Fault rules (docs/emulator.md "Faults"): which requests a rule may fault, and whether it
fires on the request it has just matched. Decided here, from the rule's counters as the store
left them after counting this request, so that every worker decides alike and a seeded rule
repeats exactly from run to run."""

from __future__ import annotations

import random

from connectlink.emulator.records import FaultRule

# Faults that only mean something on one endpoint; the rest apply to any.
TOKEN = "POST /v2/oauth/token"
LINK = "POST /v2/fulfillment/users/{user_id}/link"
CONSENT = "POST /oauth/authorize"
ONLY_ON = {"invalid_grant": TOKEN, "expired_token": TOKEN, "linking_token_invalid": LINK,
           "deny": CONSENT}


def misplaced(fault: str, endpoint: str) -> str | None:
    """Why ``fault`` cannot apply to ``endpoint``, or None if it can."""
    only = ONLY_ON.get(fault)
    if only is not None and endpoint != only:
        return f"{fault} applies only to {only}"
    return None


def concerns(rule: FaultRule, retailer_id: int | None, client_id: str | None,
             grant_type: str | None) -> bool:
    """Does the rule concern this request: its retailer and client (where the rule names
    them), and for ``invalid_grant`` a code exchange?"""
    if rule.retailer_id is not None and rule.retailer_id != retailer_id:
        return False
    if rule.client_id is not None and rule.client_id != client_id:
        return False
    return rule.fault != "invalid_grant" or grant_type == "authorization_code"


def fires(rule: FaultRule) -> bool:
    """Whether the rule fails the request it has just counted (``rule.matched`` includes it):
    every ``every``-th one, each with ``probability``, drawn from the seed and the count."""
    if rule.matched % rule.every != 0:
        return False
    if rule.probability >= 1:
        return True
    return random.Random(f"{rule.seed}:{rule.matched}").random() < rule.probability
