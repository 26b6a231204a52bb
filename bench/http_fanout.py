"""Blocking-query fan-out: N clients block on `GET /v1/health/service/web?index=I&wait=60s`,
one registration changes the service, and we time, for every client, from the change's
acknowledgement to its answer. Usage: python3 bench/http_fanout.py HTTP_PORT [N]"""
import asyncio
import json
import statistics
import sys
import time
import urllib.request

PORT = int(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10000


def put(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=json.dumps(body).encode(), method="PUT")
    urllib.request.urlopen(req).read()


def index():
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/health/service/web") as r:
        return int(r.headers["X-Consul-Index"])


async def blocked(idx, ready, answered):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(f"GET /v1/health/service/web?index={idx}&wait=60s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    ready.append(1)
    await reader.read()  # until the server closes: the whole answer
    answered.append(time.perf_counter())
    writer.close()


async def main():
    put("/v1/agent/service/register", {"Name": "web", "ID": "web-0", "Address": "10.0.0.1", "Port": 80})
    idx = index()
    ready, answered = [], []
    tasks = [asyncio.create_task(blocked(idx, ready, answered)) for _ in range(N)]
    while len(ready) < N:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # every request has reached the server and blocks
    assert not answered, f"{len(answered)} answered before the change"
    start = time.perf_counter()
    put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Address": "10.0.0.2", "Port": 80})
    acked = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    lat = sorted((t - acked) * 1000 for t in answered)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"clients={N} write_ack_ms={(acked - start) * 1000:.1f} woken: p50={q(0.5):.1f}ms p99={q(0.99):.1f}ms max={lat[-1]:.1f}ms")


asyncio.run(main())
