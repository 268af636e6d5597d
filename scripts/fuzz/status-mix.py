#!/usr/bin/env python3
"""The fuzzer's answers per operation: how many of each status, from schemathesis's NDJSON report.

usage: status-mix.py REPORT.ndjson [--require-past-not-found SPEC.json]

Left out, since they say nothing of what an operation does with data: the probes of methods the
spec does not declare, the ignored-auth check's resends (without or with a wrong key), and
requests sent without any key. With --require-past-not-found, exits 1 naming every operation of
the spec none of whose answers got past the door and the lookup: none at all, or only 400, 401,
404 or 422.
"""
import collections
import json
import sys

report = sys.argv[1]
mix = collections.defaultdict(collections.Counter)
with open(report) as lines:
    for line in lines:
        finished = json.loads(line).get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        cases = recorder.get("cases") or {}
        for case_id, interaction in (recorder.get("interactions") or {}).items():
            node = cases.get(case_id) or {}
            case = node.get("value") or {}
            meta = case.get("meta") or {}
            parent = (cases.get(node.get("parent_id")) or {}).get("value") or {}
            resent = (
                not node.get("is_transition_applied")
                and parent.get("method") == case.get("method")
                and parent.get("path") == case.get("path")
            )
            scenario = ((meta.get("phase") or {}).get("data") or {}).get("scenario")
            headers = interaction["request"].get("headers") or {}
            keyed = any(name.lower() == "authorization" for name in headers)
            if resent or scenario == "unspecified_http_method" or not keyed:
                continue
            # A stateful scenario spans operations: there the case names its own.
            if finished["phase"] == "stateful":
                operation = f"{case['method']} {case['path']}"
            else:
                operation = recorder["label"]
            response = interaction.get("response")
            mix[operation][response["status_code"] if response else "none"] += 1

print(f"{'operation':58} {'sent':>6}  statuses")
for operation in sorted(mix):
    counts = mix[operation]
    statuses = "  ".join(f"{status}:{n}" for status, n in sorted(counts.items(), key=str))
    print(f"{operation:58} {sum(counts.values()):6}  {statuses}")

if "--require-past-not-found" in sys.argv:
    with open(sys.argv[sys.argv.index("--require-past-not-found") + 1]) as spec:
        paths = json.load(spec)["paths"]
    operations = [f"{method.upper()} {path}" for path, item in paths.items() for method in item]
    stuck = [op for op in operations if set(mix.get(op, {})) <= {400, 401, 404, 422}]
    if stuck:
        print("never past 'not found' or a refused input: " + ", ".join(sorted(stuck)), file=sys.stderr)
        sys.exit(1)
