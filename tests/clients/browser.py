"""A real headless browser for the gateway's end-to-end tests: Playwright driving Chromium.

Usage: python browser.py SCRIPT_JSON_FILE
Runs the script's steps, in order, in ONE browser context, so cookies (and everything else a
browser keeps) persist from step to step, as they would for a user clicking through the pages.
The browser is the system Chromium ($MCPGW_TEST_CHROMIUM, default /usr/bin/chromium, installed
by scripts/peers.sh setup), never Playwright's own download. Every action times out after 15 s.

Script: {"screenshots": DIR, "steps": [STEP, ...]}, each STEP one object named by its verb:
  {"goto": URL}                        navigate; its status goes into "statuses"
  {"fill": SELECTOR, "value": TEXT}    type TEXT into a field
  {"click": SELECTOR}                  click; when the click navigates (a link, a form submit,
                                       however many redirects and hosts it goes through, and any
                                       navigation the landing page starts by itself, such as an
                                       auto-submitting form), wait until the final page has
                                       loaded; its status (null when the click did not navigate)
                                       goes into "statuses". Optional "navigates": true (must
                                       navigate: wait up to 15 s for it to start) or false (do
                                       not wait); by default a navigation must start within 0.5 s
  {"screenshot": NAME}                 full-page PNG to DIR/NAME.png
  {"text": SELECTOR, "as": KEY}        values[KEY] = the first match's inner text, or null
  {"count": SELECTOR, "as": KEY}       values[KEY] = the number of matches
  {"attr": SELECTOR, "name": ATTR, "as": KEY}  values[KEY] = the attribute, or null
  {"html": true, "as": KEY}            values[KEY] = the page's full HTML
  {"url": true, "as": KEY}             values[KEY] = the page's URL
  {"cookies": true, "as": KEY}         values[KEY] = the context's cookies (Playwright's dicts)
  {"set_cookie": {"name", "value", "url", ...}}  add or replace a cookie in the context
  {"post": URL, "form": {K: V}, "as": KEY}  a form-encoded POST from the browser context (it
                                       carries the browser's cookies, and a Set-Cookie answer lands
                                       in the context), redirects not followed; values[KEY] =
                                       {"status", "body", "location"}; optional "headers": {K: V}

Prints exactly one JSON object on stdout: {"ok", "values", "statuses", "hosts",
"console_errors", "csp_violations", "error"}. hosts: the host:port of every main-frame document
response, redirects included, in order. console_errors: console errors and uncaught page
exceptions (not the browser's own /favicon.ico fetch failing), except Content Security Policy
reports, which go to csp_violations (Chromium logs each violation to the console). On the first failing step it stops, takes the screenshot
"failure-stepN" when it can, and sets ok false and error to "step N (VERB): MESSAGE", N counting
from 0 as the steps' list does. It exits 0 either way: the calling test decides.
"""

import json
import os
import sys
import time
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

TIMEOUT_MS = 15_000
# How long a click may take to start the navigation it causes, and how long a loaded page must
# stay put before it counts as the final one (a page may navigate on load by itself).
CLICK_GRACE_MS = 500
QUIET_MS = 300
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VERBS = ("goto", "fill", "click", "screenshot", "text", "count", "attr", "html", "url",
         "cookies", "set_cookie", "post")


class StepError(Exception):
    pass


class Tracker:
    """Watches the main frame's navigations: the hosts and statuses of its document responses,
    which navigation requests are still in flight, and how the last one ended."""

    def __init__(self, page, out):
        self.page, self.out = page, out
        self.started = 0          # main-frame navigation requests seen so far
        self.inflight = set()
        self.last = None          # the latest main-frame navigation request
        self.failed = {}          # request -> failure text
        self.status = None        # status of the latest main-frame document response
        page.on("request", self.on_request)
        page.on("response", self.on_response)
        page.on("requestfinished", lambda r: self.inflight.discard(r))
        page.on("requestfailed", self.on_failed)
        page.on("console", self.on_console)
        page.on("pageerror", lambda e: out["console_errors"].append(f"uncaught: {e}"))

    def main_nav(self, request):
        try:
            return request.is_navigation_request() and request.frame == self.page.main_frame
        except Exception:
            return False

    def on_request(self, request):
        if self.main_nav(request):
            self.started += 1
            self.inflight.add(request)
            self.last = request

    def on_response(self, response):
        if self.main_nav(response.request):
            self.out["hosts"].append(urlsplit(response.url).netloc)
            self.status = response.status

    def on_failed(self, request):
        self.inflight.discard(request)
        if self.main_nav(request):
            self.failed[request] = request.failure or "failed"

    def on_console(self, msg):
        text = msg.text
        if "Content Security Policy" in text:
            self.out["csp_violations"].append(text)
        elif msg.type == "error":
            # Chromium fetches /favicon.ico on its own; a 404 for it says nothing about the page.
            if (msg.location or {}).get("url", "").endswith("/favicon.ico"):
                return
            self.out["console_errors"].append(text)

    def pump(self, ms):
        # Lets Playwright deliver the events queued meanwhile (the sync API only does so while
        # it is inside a call).
        self.page.wait_for_timeout(ms)

    def wait_started(self, mark, ms):
        end = time.monotonic() + ms / 1000
        while self.started == mark and time.monotonic() < end:
            self.pump(20)
        return self.started > mark

    def settle(self):
        """Waits until the navigation under way, and any the landing page starts by itself,
        has finished and the final page has loaded; returns its status."""
        while True:
            end = time.monotonic() + TIMEOUT_MS / 1000
            while self.inflight:
                if time.monotonic() >= end:
                    raise StepError(f"navigation to {self.last.url} did not finish in {TIMEOUT_MS // 1000} s")
                self.pump(20)
            self.page.wait_for_load_state("load")
            if not self.wait_started(self.started, QUIET_MS):
                break
        if self.last in self.failed:
            raise StepError(f"navigation to {self.last.url} failed: {self.failed[self.last]}")
        return self.status


def verb_of(step):
    verbs = [v for v in VERBS if v in step]
    if len(verbs) != 1:
        raise StepError(f"a step needs exactly one of {', '.join(VERBS)}: {json.dumps(step)}")
    return verbs[0]


def run_step(step, verb, page, context, tracker, shots, out):
    values = out["values"]
    if verb == "goto":
        tracker.status = None
        response = page.goto(step["goto"], wait_until="load")
        tracker.settle()
        # A same-document navigation (only the #fragment changes) has no response.
        out["statuses"].append(tracker.status if response is not None else None)
    elif verb == "fill":
        page.fill(step["fill"], step["value"])
    elif verb == "click":
        mark, navigates = tracker.started, step.get("navigates")
        page.click(step["click"])
        if navigates is False:
            started = False
        else:
            started = tracker.wait_started(mark, TIMEOUT_MS if navigates else CLICK_GRACE_MS)
            if navigates and not started:
                raise StepError(f"the click started no navigation in {TIMEOUT_MS // 1000} s")
        out["statuses"].append(tracker.settle() if started else None)
    elif verb == "screenshot":
        page.screenshot(path=os.path.join(shots, f"{step['screenshot']}.png"), full_page=True)
    elif verb == "text":
        first = page.locator(step["text"]).first
        values[step["as"]] = first.inner_text() if first.count() else None
    elif verb == "count":
        values[step["as"]] = page.locator(step["count"]).count()
    elif verb == "attr":
        first = page.locator(step["attr"]).first
        values[step["as"]] = first.get_attribute(step["name"]) if first.count() else None
    elif verb == "html":
        values[step["as"]] = page.content()
    elif verb == "url":
        values[step["as"]] = page.url
    elif verb == "cookies":
        values[step["as"]] = context.cookies()
    elif verb == "set_cookie":
        context.add_cookies([step["set_cookie"]])
    elif verb == "post":
        r = context.request.post(step["post"], form=step.get("form", {}),
                                 headers=step.get("headers"), max_redirects=0,
                                 timeout=TIMEOUT_MS)
        values[step["as"]] = {"status": r.status, "body": r.text(),
                              "location": r.headers.get("location")}


def main():
    with open(sys.argv[1]) as f:
        script = json.load(f)
    shots = script.get("screenshots") or os.path.dirname(os.path.abspath(sys.argv[1]))
    out = {"ok": False, "values": {}, "statuses": [], "hosts": [], "console_errors": [],
           "csp_violations": [], "error": None}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=os.environ.get("MCPGW_TEST_CHROMIUM", "/usr/bin/chromium"),
                headless=True, args=LAUNCH_ARGS, timeout=30_000)
            try:
                context = browser.new_context()
                context.set_default_timeout(TIMEOUT_MS)
                context.set_default_navigation_timeout(TIMEOUT_MS)
                page = context.new_page()
                tracker = Tracker(page, out)
                for n, step in enumerate(script.get("steps", [])):
                    verb = "?"
                    try:
                        verb = verb_of(step)
                        if verb == "screenshot":
                            os.makedirs(shots, exist_ok=True)
                        run_step(step, verb, page, context, tracker, shots, out)
                    except Exception as e:
                        # Playwright's messages end with a call log; the first lines say it.
                        msg = str(e).strip() or type(e).__name__
                        out["error"] = f"step {n} ({verb}): {msg[:2000]}"
                        try:
                            os.makedirs(shots, exist_ok=True)
                            page.screenshot(path=os.path.join(shots, f"failure-step{n}.png"),
                                            full_page=True, timeout=5_000)
                        except Exception:
                            pass
                        break
                else:
                    out["ok"] = True
            finally:
                browser.close()
    except Exception as e:
        # The browser would not start (or died): still one JSON answer.
        out["ok"] = False
        out["error"] = out["error"] or f"browser: {str(e).strip()[:2000]}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
