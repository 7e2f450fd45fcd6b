"""Checks CloudWatch Embedded Metric Format lines the way CloudWatch Logs reads them.

Usage: python check_emf.py < lines.jsonl

Each line must be one JSON object valid against the published EMF JSON schema
(emf_schema.json beside this file, validated with the `jsonschema` package), and follow the
rules around it in the specification: every dimension key names a string member of the root,
every metric name a number or an array of at most 100 numbers on the root, and the whole
line at most 256 KB. Prints {"checked": N, "failures": [...], "metrics": [names]} and exits 0.
"""

import json
import pathlib
import sys

import jsonschema

schema = json.loads((pathlib.Path(__file__).parent / "emf_schema.json").read_text())
validator = jsonschema.Draft7Validator(schema)

checked, failures, names = 0, [], set()
for n, raw in enumerate(sys.stdin.read().splitlines(), 1):
    if not raw.strip():
        continue
    checked += 1
    if len(raw.encode()) > 256 * 1024:
        failures.append(f"line {n}: larger than 256 KB")
        continue
    try:
        doc = json.loads(raw)
    except ValueError as e:
        failures.append(f"line {n}: not JSON: {e}")
        continue
    for err in validator.iter_errors(doc):
        failures.append(f"line {n}: schema: {'/'.join(map(str, err.path))}: {err.message}")
    for d in doc.get("_aws", {}).get("CloudWatchMetrics", []):
        for dims in d.get("Dimensions", []):
            for key in dims:
                v = doc.get(key)
                if not isinstance(v, str) or not v:
                    failures.append(f"line {n}: dimension {key!r} is {v!r}, not a string")
        for m in d.get("Metrics", []):
            name = m.get("Name")
            names.add(name)
            v = doc.get(name)
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
                isinstance(v, list)
                and len(v) <= 100
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            )
            if not ok:
                failures.append(f"line {n}: metric {name!r} is {v!r}")

print(json.dumps({"checked": checked, "failures": failures, "metrics": sorted(names)}))
