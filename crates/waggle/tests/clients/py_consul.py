"""py-consul (PyPI) against Waggle's Consul-compatible HTTP API: agent registration,
catalog and health reads with tag / passing filters, a blocking query woken by a change,
deregistration, and a refused registration. Usage: py_consul.py HOST PORT"""
import sys
import threading
import time

import consul

host, port = sys.argv[1], int(sys.argv[2])
c = consul.Consul(host=host, port=port)

c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=8080, tags=["v1"], meta={"team": "core"})
c.agent.service.register("web", service_id="web-2", address="127.0.0.1", port=8081)

index, nodes = c.health.service("web", passing=True)
assert len(nodes) == 2, nodes
assert int(index) > 0
assert {n["Service"]["ID"] for n in nodes} == {"web-1", "web-2"}
assert all(n["Checks"][0]["CheckID"] == "serfHealth" for n in nodes), nodes

_, tagged = c.catalog.service("web", tag="v1")
assert [s["ServiceID"] for s in tagged] == ["web-1"], tagged
assert tagged[0]["ServiceMeta"] == {"team": "core"}, tagged

services = c.agent.services()
assert set(services) == {"web-1", "web-2"}, services
_, catalog = c.catalog.services()
assert catalog["web"] == ["v1"], catalog


def later():
    time.sleep(0.5)
    c.agent.service.register("web", service_id="web-3", address="127.0.0.1", port=8082)


threading.Thread(target=later).start()
started = time.time()
new_index, nodes = c.health.service("web", index=index, wait="20s")
assert int(new_index) > int(index), (index, new_index)
assert len(nodes) == 3, nodes
assert time.time() - started < 15, "the blocking query was woken by the change"

c.agent.service.deregister("web-1")
_, nodes = c.health.service("web")
assert {n["Service"]["ID"] for n in nodes} == {"web-2", "web-3"}, nodes

try:
    c.agent.service.register("bad name!", port=1)
except Exception as e:  # py-consul raises on 4xx
    assert "400" in str(e) or "Invalid" in str(e), e
else:
    raise AssertionError("an invalid registration was accepted")

print("ok")
