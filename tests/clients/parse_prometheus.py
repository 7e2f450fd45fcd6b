"""Parses a Prometheus text exposition with Prometheus' own Python parser.

Usage: python parse_prometheus.py < metrics.txt

Uses `prometheus_client.parser.text_string_to_metric_families` (a malformed exposition raises,
exit 1). Prints {"families": {name: {"type": ..., "samples": [{"name", "labels", "value"}]}}}.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    families[f.name] = {
        "type": f.type,
        "samples": [
            {"name": s.name, "labels": dict(s.labels), "value": s.value} for s in f.samples
        ],
    }
print(json.dumps({"families": families}))
