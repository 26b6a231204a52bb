"""py-consul (PyPI) against Waggle's Consul-compatible HTTP API: agent registration,
catalog and health reads with tag / passing filters, a blocking query woken by a change,
deregistration, a refused registration, TTL checks (pass / warn / fail, a blocking query
woken by a check), check registration, maintenance mode, and the key/value store (cas,
flags, recurse, keys with a separator, a blocking get). Usage: py_consul.py HOST PORT"""
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

# TTL checks: critical until passed, then passing; warn and fail through the check API.
c.agent.service.register("cron", service_id="cron-1", address="127.0.0.1", port=9000,
                         check=consul.Check.ttl("30s"))
_, nodes = c.health.service("cron", passing=True)
assert nodes == [], nodes
index, _ = c.health.service("cron")


def report():
    time.sleep(0.5)
    c.agent.check.ttl_pass("service:cron-1", notes="alive")


threading.Thread(target=report).start()
new_index, nodes = c.health.service("cron", index=index, wait="20s", passing=True)
assert int(new_index) > int(index), (index, new_index)
assert [n["Service"]["ID"] for n in nodes] == ["cron-1"], nodes
check = [ch for ch in nodes[0]["Checks"] if ch["CheckID"] == "service:cron-1"][0]
assert check["Status"] == "passing" and check["Output"] == "alive", check
c.agent.check.ttl_warn("service:cron-1", notes="slow")
assert c.agent.checks()["service:cron-1"]["Status"] == "warning"
c.agent.check.ttl_fail("service:cron-1")
_, checks = c.health.checks("cron")
assert [ch["Status"] for ch in checks] == ["critical"], checks
_, critical = c.health.state("critical")
assert "service:cron-1" in {ch["CheckID"] for ch in critical}, critical

# A check registered on its own, and maintenance mode.
c.agent.check.register("disk", check=consul.Check.ttl("10s"), check_id="disk-1", service_id="cron-1")
assert "disk-1" in c.agent.checks()
c.agent.check.deregister("disk-1")
assert "disk-1" not in c.agent.checks()
c.agent.check.ttl_pass("service:cron-1")
c.agent.service.maintenance("cron-1", "true", reason="upgrade")
_, nodes = c.health.service("cron", passing=True)
assert nodes == [], nodes
c.agent.service.maintenance("cron-1", "false")
_, nodes = c.health.service("cron", passing=True)
assert len(nodes) == 1, nodes

# The key/value store: put / get, cas, flags, recurse, keys with a separator, delete, and a
# blocking get woken by a write.
assert c.kv.put("app/db", "postgres://db") is True
assert c.kv.put("app/cfg/a", "1", flags=7) is True
index, entry = c.kv.get("app/db")
assert entry["Value"] == b"postgres://db", entry
assert c.kv.put("app/db", "x", cas=0) is False, "cas=0 creates only"
assert c.kv.put("app/db", "mysql://db", cas=entry["ModifyIndex"]) is True
assert c.kv.put("app/db", "y", cas=entry["ModifyIndex"]) is False, "a stale cas fails"
_, entries = c.kv.get("app/", recurse=True)
assert [(e["Key"], e["Flags"]) for e in entries] == [("app/cfg/a", 7), ("app/db", 0)], entries
_, keys = c.kv.get("app/", keys=True, separator="/")
assert keys == ["app/cfg/", "app/db"], keys
assert c.kv.get("missing")[1] is None
index, _ = c.kv.get("app/db")


def write_later():
    time.sleep(0.5)
    c.kv.put("app/db", "sqlite://db")


threading.Thread(target=write_later).start()
new_index, entry = c.kv.get("app/db", index=index, wait="20s")
assert int(new_index) > int(index) and entry["Value"] == b"sqlite://db", (index, new_index, entry)
assert c.kv.delete("app/", recurse=True) is True
assert c.kv.get("app/", recurse=True)[1] is None

print("ok")
