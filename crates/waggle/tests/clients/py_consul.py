"""py-consul (PyPI) against Waggle's Consul-compatible HTTP API: agent registration,
catalog and health reads with tag / passing filters, a blocking query woken by a change,
deregistration, a refused registration, TTL checks (pass / warn / fail, a blocking query
woken by a check), check registration, maintenance mode, and the key/value store (cas,
flags, recurse, keys with a separator, a blocking get), sessions (create / info / list /
node / renew / destroy, behaviors, lock-delay, a blocking list woken by a destroy), locks on
keys (acquire / release, LockIndex) and transactions (atomic, 409 with the failed operation).
Usage: py_consul.py HOST PORT"""
import base64
import sys
import threading
import time

import consul

host, port = sys.argv[1], int(sys.argv[2])
c = consul.Consul(host=host, port=port)

# A service without a port (Consul allows it): registered, listed with port 0, removed.
c.agent.service.register("redis", address="127.0.0.1")
_, nodes = c.health.service("redis")
assert [(n["Service"]["ID"], n["Service"]["Port"]) for n in nodes] == [("redis", 0)], nodes
c.agent.service.deregister("redis")

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

# Sessions and locks on keys.
s1 = c.session.create(name="leader", ttl=10, lock_delay=0)
s2 = c.session.create(name="follower", behavior="delete", lock_delay=1)
_, info = c.session.info(s1)
assert (info["ID"], info["Name"], info["TTL"], info["Behavior"], info["LockDelay"]) == (s1, "leader", "10s", "release", 0), info
_, info2 = c.session.info(s2)
assert (info2["TTL"], info2["Behavior"], info2["LockDelay"]) == ("", "delete", 1_000_000_000), info2
_, listed = c.session.list()
assert {s["ID"] for s in listed} == {s1, s2}, listed
_, on_node = c.session.node(info["Node"])
assert {s["ID"] for s in on_node} == {s1, s2}, on_node
assert c.session.node("elsewhere")[1] == []

assert c.kv.put("svc/leader", "a", acquire=s1) is True
assert c.kv.put("svc/leader", "b", acquire=s2) is False, "held by s1"
_, e = c.kv.get("svc/leader")
assert (e["Session"], e["LockIndex"], e["Value"]) == (s1, 1, b"a"), e
assert c.kv.put("svc/leader", "c") is True, "a plain write keeps the holder"
assert c.kv.get("svc/leader")[1]["Session"] == s1
assert c.kv.put("svc/leader", "b", release=s2) is False, "s2 does not hold it"
assert c.kv.put("svc/leader", None, release=s1) is True
_, e = c.kv.get("svc/leader")
assert "Session" not in e and e["LockIndex"] == 1 and e["Value"] is None, e
assert c.kv.put("svc/leader", "b", acquire=s2) is True
assert c.kv.get("svc/leader")[1]["LockIndex"] == 2
assert c.session.renew(s1)["ID"] == s1

# Destroying s2 (behavior delete, lock-delay 1 s) deletes its key and keeps it from being
# acquired for a second; a blocking list wakes up.
index, _ = c.session.list()


def destroy_later():
    time.sleep(0.5)
    assert c.session.destroy(s2) is True


threading.Thread(target=destroy_later).start()
new_index, listed = c.session.list(index=index, wait="20s")
assert int(new_index) > int(index) and [s["ID"] for s in listed] == [s1], listed
assert c.kv.get("svc/leader")[1] is None, "behavior delete"
assert c.kv.put("svc/leader", "a", acquire=s1) is False, "lock-delay"
time.sleep(1.2)
assert c.kv.put("svc/leader", "a", acquire=s1) is True
assert c.session.info(s2)[1] is None
try:
    c.session.renew(s2)
    raise AssertionError("renewing a destroyed session succeeds")
except consul.NotFound:
    pass
assert c.session.destroy(s2) is True, "destroy is idempotent"

# Destroying s1 (behavior release): the key stays, unlocked.
c.session.destroy(s1)
_, e = c.kv.get("svc/leader")
assert "Session" not in e and e["Value"] == b"a", e


def b64(text):
    return base64.b64encode(text.encode()).decode()


# Transactions: atomic, results for writes without values, 409 naming the failed operation.
s3 = c.session.create(lock_delay=0)
result = c.txn.put([
    {"KV": {"Verb": "set", "Key": "t/a", "Value": b64("1")}},
    {"KV": {"Verb": "lock", "Key": "t/lock", "Value": b64("me"), "Session": s3}},
    {"KV": {"Verb": "get", "Key": "svc/leader"}},
])
assert result["Errors"] is None, result
kvs = [r["KV"] for r in result["Results"]]
assert [k["Key"] for k in kvs] == ["t/a", "t/lock", "svc/leader"], kvs
assert kvs[0]["Value"] is None and kvs[1]["Session"] == s3 and kvs[2]["Value"] == b64("a"), kvs
index = kvs[0]["ModifyIndex"]
try:
    c.txn.put([
        {"KV": {"Verb": "set", "Key": "t/b", "Value": b64("2")}},
        {"KV": {"Verb": "cas", "Key": "t/a", "Value": b64("3"), "Index": index + 100}},
    ])
    raise AssertionError("a stale cas commits")
except consul.ConsulException as e:
    assert "409" in str(e) and '"OpIndex": 1' in str(e).replace('":', '": '), e
assert c.kv.get("t/b")[1] is None, "nothing of a failed transaction is applied"
result = c.txn.put([
    {"KV": {"Verb": "cas", "Key": "t/a", "Value": b64("3"), "Index": index}},
    {"KV": {"Verb": "check-session", "Key": "t/lock", "Session": s3}},
    {"KV": {"Verb": "delete-tree", "Key": "svc/"}},
])
assert len(result["Results"]) == 2, result
assert c.kv.get("t/a")[1]["Value"] == b"3" and c.kv.get("svc/leader")[1] is None

print("ok")
