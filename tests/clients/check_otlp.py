"""Parses OTLP/HTTP JSON export bodies into the OpenTelemetry protobuf messages.

Usage: python check_otlp.py < bodies.json     (a JSON list of ExportTraceServiceRequest bodies)

OTLP's JSON encoding is the protobuf JSON mapping with one difference: trace and span ids are
lowercase hex, not base64. Those are checked as hex (32 and 16 digits) and converted, then each
body is parsed strictly (`google.protobuf.json_format.Parse`, unknown fields refused) into
`opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`. Prints
{"spans": [{"trace_id", "span_id", "parent_span_id", "name", "kind", "attributes", "service"}]}
and exits 0, or exits 1 with the reason.
"""

import base64
import json
import re
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

IDS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}


def hex_ids_to_base64(node):
    if isinstance(node, dict):
        for k, v in list(node.items()):
            if k in IDS and isinstance(v, str):
                if not re.fullmatch(f"[0-9a-f]{{{IDS[k]}}}", v):
                    sys.exit(f"{k} {v!r} is not {IDS[k]} lowercase hex digits")
                node[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                hex_ids_to_base64(v)
    elif isinstance(node, list):
        for v in node:
            hex_ids_to_base64(v)


out = []
for body in json.load(sys.stdin):
    hex_ids_to_base64(body)
    req = ExportTraceServiceRequest()
    json_format.Parse(json.dumps(body), req, ignore_unknown_fields=False)
    for rs in req.resource_spans:
        service = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name")
        for ss in rs.scope_spans:
            for s in ss.spans:
                if s.end_time_unix_nano < s.start_time_unix_nano or s.start_time_unix_nano == 0:
                    sys.exit(f"span {s.name}: bad times {s.start_time_unix_nano} {s.end_time_unix_nano}")
                attrs = {}
                for a in s.attributes:
                    kind = a.value.WhichOneof("value")
                    attrs[a.key] = getattr(a.value, kind)
                out.append({
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "attributes": attrs,
                    "service": service,
                })
print(json.dumps({"spans": out}))
