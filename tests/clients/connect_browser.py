"""A headless browser for the gateway's connect flow (tests/tests/it/oauth_connect.rs).

Usage: python connect_browser.py CONNECT_URL BEARER LOGIN_HINT
Opens CONNECT_URL (the gateway's connect page; BEARER, when not "", is sent to it only, as a
CLI user's credential would be), checks the page names a user and a server, follows its
`<a id="continue">` link, and from there every redirect, with one cookie jar from the first
page on, as a browser does (the connect page's cookie binds the flow to this browser: the
continue link and the callback need it): to the provider, through its (auto-approving) login
and consent, back to the gateway's callback. At the provider's authorization endpoint the user "types" LOGIN_HINT (added as
`login_hint`). Prints one JSON object: {"page_user", "page_server", "status", "body",
"hosts"} where status/body are the final page's and hosts the hosts visited in order.
"""

import html
import json
import re
import sys
from urllib.parse import urlencode, urljoin, urlsplit, parse_qsl, urlunsplit

try:
    import httpx2 as httpx
except ImportError:
    import httpx

url, bearer, login_hint = sys.argv[1], sys.argv[2], sys.argv[3]
hosts = []
with httpx.Client(timeout=20, follow_redirects=False) as http:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    page = http.get(url, headers=headers)
    hosts.append(urlsplit(url).netloc)
    text = page.text
    found = lambda id_: (m := re.search(rf'id="{id_}"[^>]*>([^<]*)<', text)) and html.unescape(m.group(1))
    out = {"page_user": found("user"), "page_server": found("server")}
    cont = re.search(r'<a id="continue" href="([^"]+)"', text)
    if page.status_code != 200 or not cont:
        print(json.dumps({**out, "status": page.status_code, "body": text, "hosts": hosts}))
        sys.exit(0)
    nxt = urljoin(url, html.unescape(cont.group(1)))
    for _ in range(20):
        parts = urlsplit(nxt)
        if parts.path.endswith("/auth") and "login_hint" not in parts.query:
            q = parse_qsl(parts.query) + [("login_hint", login_hint)]
            nxt = urlunsplit(parts._replace(query=urlencode(q)))
        hosts.append(urlsplit(nxt).netloc)
        r = http.get(nxt)
        if r.status_code in (301, 302, 303, 307, 308):
            nxt = urljoin(nxt, r.headers["location"])
            continue
        print(json.dumps({**out, "status": r.status_code, "body": r.text, "hosts": hosts}))
        break
    else:
        sys.exit("too many redirects")
