#!/usr/bin/env python3
"""Opens N connections to a fresh `weir serve` (offline mock, 10 s header/idle timeouts): every other
one sends a partial request head, the rest nothing. Prints RSS, open descriptors and /health before,
right after, and 11 s later (all should be closed by then). Usage: scripts/connection_flood.py [N] [weir]
(default 5000, target/debug/weir). Linux only (/proc). Not part of CI: docs/reliability.md, defect 4."""
import os, socket, subprocess, sys, tempfile, time, urllib.request

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
WEIR = sys.argv[2] if len(sys.argv) > 2 else "target/debug/weir"
CONFIG = """server:
  header_read_timeout: 10s
  idle_timeout: 10s
logging:
  level: warn
models:
  - name: mock-model
    deployments:
      - id: m
        provider: mock
"""

with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    f.write(CONFIG)
p = subprocess.Popen([WEIR, "serve", "--config", f.name, "--port", "0"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
base = p.stdout.readline().strip().split("listening on ")[1]
host, port = base.replace("http://", "").split(":")


def stats():
    rss = next(l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")).split()[1]
    fds = len(os.listdir(f"/proc/{p.pid}/fd"))
    t = time.time()
    code = urllib.request.urlopen(base + "/health", timeout=10).status
    return f"rss={int(rss) // 1024}MB fds={fds} /health={code} in {(time.time() - t) * 1000:.1f}ms"


try:
    time.sleep(0.5)
    print("start:", stats())
    socks, t0 = [], time.time()
    for i in range(N):
        s = socket.create_connection((host, int(port)))
        if i % 2:
            s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        socks.append(s)
    print(f"{N} opened in {time.time() - t0:.1f}s:", stats())
    time.sleep(11)
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            alive += bool(s.recv(1))
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print(f"11 s later: {alive} of {N} still open;", stats())
finally:
    p.terminate()
    p.wait()
    os.unlink(f.name)
