"""A client with no SDK for the autotracing topologies: COUNT GET requests to
http://HOST:PORT/<prefix>/<i>, CONCURRENCY at a time, each worker thread on one
keep-alive connection (reopened only if the server closes it).

    python load_client.py HOST:PORT PREFIX COUNT CONCURRENCY [--request-id]

--request-id sends a unique `X-Request-ID: <prefix>-<i>` with each request.
Prints one JSON object: {"pid", "statuses": {path: status}}; exit 0 when every
request got an answer.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading


def main() -> int:
    target, prefix, count, concurrency = sys.argv[1:5]
    send_rid = "--request-id" in sys.argv[5:]
    host, port = target.rsplit(":", 1)
    count, concurrency = int(count), int(concurrency)
    todo = list(range(count))
    lock = threading.Lock()
    statuses: dict[str, int] = {}

    def worker() -> None:
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop(0)
            path = f"/{prefix}/{i}"
            headers = {"X-Request-ID": f"{prefix}-{i}"} if send_rid else {}
            status = 0
            for _ in range(2):
                try:
                    c.request("GET", path, headers=headers)
                    r = c.getresponse()
                    r.read()
                    status = r.status
                    break
                except (http.client.HTTPException, OSError):
                    c.close()
                    c = http.client.HTTPConnection(host, int(port), timeout=60)
            with lock:
                statuses[path] = status
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"pid": os.getpid(), "statuses": statuses}), flush=True)
    return 0 if all(statuses.get(f"/{prefix}/{i}") for i in range(count)) else 1


if __name__ == "__main__":
    sys.exit(main())
