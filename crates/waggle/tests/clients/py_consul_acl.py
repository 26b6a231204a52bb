"""py-consul (PyPI) against Waggle's ACL API, deny by default: bootstrap refused once the
initial management token exists, policies (JSON rules, as py-consul sends them) created / read / listed / updated,
roles, tokens (policy, role, service identity, templated policy links), token self, clone,
delete, templated policies; a scoped token may do only what its rules say, and a deleted token
is refused. Usage: py_consul_acl.py HOST PORT MANAGEMENT_SECRET"""
import json
import sys

import consul

host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
anonymous = consul.Consul(host=host, port=port)
c = consul.Consul(host=host, port=port, token=root)


def refused(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except (consul.ACLPermissionDenied, consul.ACLDisabled, consul.ConsulException) as e:
        return str(e)
    raise AssertionError(f"{call} was not refused")


# Deny by default: no token, no write.
assert "Permission denied" in refused(anonymous.kv.put, "a", "1")
# Bootstrapped already (the initial management token).
assert "ACL bootstrap no longer allowed" in refused(anonymous.acl.bootstrap)

me = c.acl.token.read_self()
assert me["Policies"][0]["Name"] == "global-management", me

# py-consul sends rules as JSON (it json.dumps them): Consul's JSON rules form.
rules = {"key_prefix": {"app/": {"policy": "write"}}, "service": {"web": {"policy": "write"}}}
policy = c.acl.policy.create("app", description="the app", rules=rules)
assert policy["Name"] == "app" and json.loads(policy["Rules"]) == rules, policy
assert c.acl.policy.read(policy["ID"])["Description"] == "the app"
assert {p["Name"] for p in c.acl.policy.list()} >= {"global-management", "app"}
c.acl.policy.update(policy["ID"], "app", description="still the app", rules=rules)
assert c.acl.policy.read(policy["ID"])["Description"] == "still the app"
assert "Invalid rules" in refused(c.acl.policy.create, "bad", rules={"key_prefix": {"": {"policy": "rwite"}}})

role = c.acl.role.create("app-role", policies_id=[policy["ID"]])
assert c.acl.role.read_by_name("app-role")["ID"] == role["ID"]

token = c.acl.token.create(description="app", roles_id=[role["ID"]])
scoped = consul.Consul(host=host, port=port, token=token["SecretID"])
assert scoped.kv.put("app/x", "1") is True
assert "Permission denied" in refused(scoped.kv.put, "other", "1")
_, entry = c.kv.get("app/x")
assert entry["Value"] == b"1", entry

svc = c.acl.token.create(description="svc", service_identities=[{"ServiceName": "api"}])
svc_client = consul.Consul(host=host, port=port, token=svc["SecretID"])
svc_client.agent.service.register("api", address="127.0.0.1", port=9000)
assert "Permission denied" in refused(svc_client.agent.service.register, "web", address="127.0.0.1", port=9001)

templates = c.acl.templated_policy.list()
assert {"builtin/service", "builtin/node", "builtin/dns"} <= set(templates), templates
preview = c.acl.templated_policy.preview("builtin/service", template_variables={"Name": "api"})
assert 'service "api"' in preview["Rules"], preview

clone = c.acl.token.clone(token["AccessorID"], description="a clone")
assert clone["SecretID"] != token["SecretID"] and clone["Description"] == "a clone", clone
assert len(c.acl.token.list()) >= 4
assert c.acl.token.delete(token["AccessorID"]) is True
assert "ACL not found" in refused(scoped.kv.put, "app/y", "1")
assert c.acl.role.delete(role["ID"]) is True
assert c.acl.policy.delete(policy["ID"]) is True
print("ok")
