"""Grants ACLs with confluent-kafka's AdminClient (CreateAcls), as an operator would.

usage: grant_acls.py BROKER PRINCIPAL < lines
Each input line: RESOURCE_TYPE PATTERN_TYPE NAME OPERATION, e.g.
  TOPIC LITERAL flag-evaluations READ
  GROUP PREFIXED flagtally READ
  TRANSACTIONAL_ID PREFIXED flagtally-tx WRITE
Prints "granted N".
"""
import sys

from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

broker, principal = sys.argv[1], sys.argv[2]
bindings = []
for line in sys.stdin:
    if not line.strip():
        continue
    rtype, pattern, name, op = line.split()
    bindings.append(AclBinding(ResourceType[rtype], name, ResourcePatternType[pattern],
                               principal, "*", AclOperation[op], AclPermissionType.ALLOW))
admin = AdminClient({"bootstrap.servers": broker})
for binding, future in admin.create_acls(bindings, request_timeout=30).items():
    future.result(30)
print(f"granted {len(bindings)}")
