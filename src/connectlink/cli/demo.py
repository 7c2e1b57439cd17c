"""``connectlink link demo``: the documented sandbox flow, end to end, against a running server,
each request and response printed as it goes over the wire with every secret masked.

Plain httpx on purpose: this is what an integration sends, step by step, with nothing of
ConnectLink's in between. Each run makes its own Connect user and Instacart account (a unique
email), so it can be run again and again on the same server.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import httpx

from connectlink.cli import shell
from connectlink.oauth.pkce import s256

DEMO_REDIRECT_URI = "http://localhost:3000/account/instacart/callback"
# Whatever these keys hold is a credential: shown as its first characters and its length.
SECRET_KEYS = frozenset({"client_secret", "access_token", "code", "linking_token", "password",
                         "code_verifier"})
STEPS = 7


def register(commands: Any) -> None:
    group = shell.group(commands, "link", "the linking flow, against a running server")
    demo = shell.command(group, "demo", "run the documented flow end to end over HTTP, "
                         "printing each request and response with secrets masked",
                         database=False, json_output=True)
    demo.add_argument("--base-url", default="http://127.0.0.1:8080",
                      help="the ConnectLink server")
    demo.add_argument("--client-id", required=True, help="a retailer's client_id")
    demo.add_argument("--client-secret", required=True, help="its client_secret")
    demo.add_argument("--redirect-uri", default=DEMO_REDIRECT_URI,
                      help="a redirect URI registered on the client")
    demo.set_defaults(run=link_demo)


def mask(value: Any) -> Any:
    """``"GkRzYQdH..."`` -> ``"GkRz…(43)"``; the secrets inside objects and lists, likewise."""
    if isinstance(value, dict):
        return {key: _hidden(item) if key in SECRET_KEYS else mask(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [mask(item) for item in value]
    return value


def _hidden(value: Any) -> Any:
    # The first four characters tell two 43-character tokens apart; a short value (a wrong
    # secret typed by hand) keeps only its length.
    if isinstance(value, str):
        return f"{value[:4] if len(value) >= 16 else ''}…({len(value)})"
    return mask(value)


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    bearer: str | None = None


def documented_flow(
    client_id: str, client_secret: str, redirect_uri: str
) -> Generator[Step, dict[str, Any], None]:
    """The README walk-through as a sequence of requests; each ``yield`` hands back the
    response's JSON body, from which the next request takes what it needs."""
    tag = secrets.token_hex(4)
    verifier = secrets.token_urlsafe(32)
    user_id = f"demo-{tag}"
    client = {"client_id": client_id, "client_secret": client_secret}
    token = (yield Step("client_credentials token", "POST", "/v2/oauth/token", {
        **client, "grant_type": "client_credentials", "scope": "connect:fulfillment"}))
    bearer = str(token["access_token"])
    yield Step("create a Connect user", "POST", "/v2/fulfillment/users", {
        "user_id": user_id, "first_name": "demo", "last_name": "shopper",
        "phone_number": "+18005550100", "locale": "en-US"}, bearer)
    account = yield Step("sandbox Instacart user, an Instacart+ member", "POST",
                         "/v2/fulfillment_sandbox/instacart_users", {
                             "email": f"demo+{tag}@example.com", "phone": "+18005550100",
                             "password": secrets.token_urlsafe(16),
                             "instacartplus_member": True}, bearer)
    code = yield Step("sandbox authorize, PKCE S256", "POST",
                      f"/v2/fulfillment_sandbox/instacart_users/{account['id']}/authorize", {
                          "response_type": "code", "client_id": client_id,
                          "redirect_uri": redirect_uri, "scope": "openid account_linking",
                          "state": tag, "code_challenge": s256(verifier),
                          "code_challenge_method": "S256"}, bearer)
    linking = yield Step("exchange the code for a linking token", "POST", "/v2/oauth/token", {
        **client, "grant_type": "authorization_code", "code": code["code"],
        "redirect_uri": redirect_uri, "code_verifier": verifier})
    link = f"/v2/fulfillment/users/{user_id}/link"
    yield Step("link the Instacart account", "POST", link,
               {"linking_token": linking["access_token"]}, bearer)
    yield Step("Instacart+ membership of the link", "GET", link, None, bearer)


def _answer(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _show(args: argparse.Namespace, number: int, step: Step, response: httpx.Response) -> None:
    headers = {"Authorization": f"Bearer {_hidden(step.bearer)}"} if step.bearer else {}
    request = {"method": step.method, "path": step.path, "headers": headers,
               "body": mask(step.body)}
    answer = {"status": response.status_code, "body": mask(_answer(response))}
    if args.json:
        shell.emit_json({"step": number, "title": step.title, "request": request,
                         "response": answer})
        return
    print(f"[{number}/{STEPS}] {step.title}\n  > {step.method} {step.path}")
    for name, value in headers.items():
        print(f"  > {name}: {value}")
    if step.body is not None:
        print(f"  > {json.dumps(request['body'], ensure_ascii=False)}")
    print(f"  < {response.status_code} {response.reason_phrase}\n"
          f"  < {json.dumps(answer['body'], ensure_ascii=False)}")


def link_demo(args: argparse.Namespace) -> int:
    flow = documented_flow(args.client_id, args.client_secret, args.redirect_uri)
    with httpx.Client(base_url=args.base_url, timeout=30) as http, \
            shell.Progress(args, STEPS, "linking") as progress:
        answer: Any = None
        for number in range(1, STEPS + 1):
            try:
                step = flow.send(answer)
            except KeyError as missing:
                raise shell.Failed(shell.REFUSED, f"step {number - 1} answered without "
                                   f"{missing}") from None
            progress.describe(step.title)
            try:
                response = http.request(step.method, step.path, json=step.body, headers=(
                    {"Authorization": f"Bearer {step.bearer}"} if step.bearer else None))
            except httpx.TransportError as exc:
                raise shell.Failed(shell.UNREACHABLE, f"cannot reach the server at "
                                   f"{args.base_url}: {exc or type(exc).__name__}") from None
            progress.advance()
            _show(args, number, step, response)
            answer = _answer(response)
            if not response.is_success or not isinstance(answer, dict):
                raise shell.Failed(shell.REFUSED, f"step {number} ({step.title}) failed: "
                                   f"{response.status_code} {json.dumps(mask(answer))}")
    if not args.json:
        print(f"Linked: {json.dumps(answer)}")
    return shell.OK
