#!/usr/bin/env python3
"""Page latency against a running demo: connects the demo shop and pages through the simulated
install screen and dialog (as a browser would), then times 300 sequential requests of the
account page, its progress JSON and the operator page.

    ./target/release/salesbot-sync demo --port 5088 --dir /tmp/demo-bench &
    python3 scripts/page-latency.py
"""
import http.cookiejar, urllib.request, re, time, html, statistics
jar = http.cookiejar.CookieJar()
op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
B = "http://127.0.0.1:5088"
H = {"Accept": "text/html"}
def get(u, h=H):
    return op.open(urllib.request.Request(u, headers=h)).read().decode()
page = get(B + "/shopify/demo-shop/login")
install = html.unescape(re.search(r'id="install" href="([^"]+)"', page).group(1))
get(install)
time.sleep(15)
page = get(B + "/facebook/login")
allow = html.unescape(re.search(r'id="allow" href="([^"]+)"', page).group(1))
get(allow)
time.sleep(3)
for path, h in [("/account", H), ("/account/progress", {"Accept": "application/json"}), ("/", H)]:
    t = []
    for i in range(300):
        s = time.perf_counter(); get(B + path, h); t.append((time.perf_counter() - s) * 1000)
    t.sort()
    print(f"{path:20s} p50 {t[150]:.2f} ms  p99 {t[296]:.2f} ms  (300 sequential requests)")
