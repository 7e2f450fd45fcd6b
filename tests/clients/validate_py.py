"""Validates JSON-RPC answers against the official Python MCP SDK's wire schemas (mcp 2.3).

Usage: python validate_py.py < answers.json

Reads a JSON list of {"era", "method", "kind", "message", "label"?} on stdin, where `era` is
the protocol version the answer was given in ("2025-03-26" .. "2025-11-25", "2026-07-28"),
`kind` is "result", "error" or "notification", and `message` is the whole JSON-RPC message as
the client received it. Prints {"checked": N, "failures": [{"label", "era", "method", "kind",
"problem"}]} and exits 0 (the caller judges the report; a crash of this script is exit 1).

Each answer is checked the way the SDK's client checks it, and stricter:
- the envelope against the era's JSON-RPC response / error / notification model;
- a result against the era's surface model for its method (`mcp_types.methods.SERVER_RESULTS`,
  keyed by (method, version): a method the era does not define fails, e.g. `ping` in
  2026-07-28), validated in pydantic strict mode, then parsed into the SDK's own monolith
  model as the client does (`parse_server_result`);
- no top-level field the era's model does not name (the surface models ignore unknown
  fields, so this is what keeps the session era free of 2026-07-28's `resultType`, `ttlMs`,
  `cacheScope`);
- an error whose code the era gives a typed form (-32042 in 2025-11-25; -32020, -32021,
  -32022 in 2026-07-28) against that form.
"""

import json
import sys
import typing
from types import UnionType

from pydantic import BaseModel, TypeAdapter, ValidationError

import mcp_types._v2025_11_25 as v2025
import mcp_types._v2026_07_28 as v2026
from mcp_types import methods
from mcp_types.version import KNOWN_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

# Fields only 2026-07-28 results carry: never in a session-era result, whatever its model.
MODERN_ONLY = ("resultType", "ttlMs", "cacheScope")


def era_module(version):
    return v2026 if version in MODERN_PROTOCOL_VERSIONS else v2025


def arms(target):
    """The models of a surface row (a model or a union of models)."""
    if isinstance(target, UnionType) or typing.get_origin(target) is typing.Union:
        return [a for a in typing.get_args(target) if isinstance(a, type)]
    return [target]


def field_names(model):
    names = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
    return names


def unknown_fields(model, data):
    """Top-level keys of `data` the model does not name (none when it allows extras)."""
    if model.model_config.get("extra") == "allow":
        return []
    known = field_names(model)
    return sorted(k for k in data if k not in known)


def pick_arm(target, data):
    """The arm of a result union a client decodes `data` as (by `resultType`)."""
    options = arms(target)
    if len(options) == 1:
        return options[0]
    wanted = "InputRequiredResult" if data.get("resultType") == "input_required" else None
    for a in options:
        if (a.__name__ == "InputRequiredResult") == (wanted is not None):
            return a
    return options[0]


def typed_errors(module):
    """code -> the era's typed error response model (an `error` whose `code` is a Literal)."""
    out = {}
    for name in dir(module):
        model = getattr(module, name)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        error = model.model_fields.get("error")
        if error is None or not (isinstance(error.annotation, type) and issubclass(error.annotation, BaseModel)):
            continue
        code = error.annotation.model_fields.get("code")
        if code is not None and typing.get_origin(code.annotation) is typing.Literal:
            for c in typing.get_args(code.annotation):
                out[c] = model
    return out


def problems_of(e):
    return "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())


def check(item):
    """The problems of one answer (empty when valid)."""
    version, method, kind, message = item.get("era"), item.get("method"), item.get("kind"), item.get("message")
    if version not in KNOWN_PROTOCOL_VERSIONS:
        return [f"unknown protocol version {version!r}"]
    if not isinstance(message, dict):
        return ["the message is not a JSON object"]
    module = era_module(version)
    found = []
    if kind == "result":
        try:
            module.JSONRPCResultResponse.model_validate(message, strict=True, by_name=False)
        except ValidationError as e:
            found.append(f"envelope: {problems_of(e)}")
        result = message.get("result")
        if not isinstance(result, dict):
            return found + ["no result object"]
        target = methods.SERVER_RESULTS.get((method, version))
        if target is None:
            return found + [f"{method!r} has no result in {version} (not a method of the era)"]
        model = pick_arm(target, result)
        try:
            model.model_validate(result, strict=True, by_name=False)
        except ValidationError as e:
            found.append(f"{model.__name__} (strict): {problems_of(e)}")
        try:
            methods.parse_server_result(method, version, result)
        except ValidationError as e:
            found.append(f"the SDK's parse_server_result: {problems_of(e)}")
        extra = unknown_fields(model, result)
        if extra:
            found.append(f"{model.__name__} has no field(s) {extra} in {version}")
        if module is v2025:
            stray = [k for k in MODERN_ONLY if k in result]
            if stray:
                found.append(f"2026-07-28 field(s) {stray} in a {version} result")
        return found
    if kind == "error":
        try:
            module.JSONRPCErrorResponse.model_validate(message, strict=True, by_name=False)
        except ValidationError as e:
            found.append(f"envelope: {problems_of(e)}")
        code = (message.get("error") or {}).get("code")
        typed = typed_errors(module).get(code)
        if typed is not None:
            try:
                typed.model_validate(message, strict=True, by_name=False)
            except ValidationError as e:
                found.append(f"{typed.__name__} (strict): {problems_of(e)}")
        if code == -32042 and module is v2026:
            found.append("-32042 (URL elicitation required) is not an error of 2026-07-28")
        return found
    if kind == "notification":
        target = methods.SERVER_NOTIFICATIONS.get((method, version))
        if target is None:
            return [f"{method!r} is not a server notification of {version}"]
        if message.get("method") != method:
            found.append(f"the message's method is {message.get('method')!r}, not {method!r}")
        try:
            target.model_validate(message, strict=True, by_name=False)
        except ValidationError as e:
            found.append(f"{target.__name__} (strict): {problems_of(e)}")
        return found
    return [f"unknown kind {kind!r} (result, error or notification)"]


def main():
    items = json.load(sys.stdin)
    if not isinstance(items, list):
        sys.exit("expected a JSON list of answers")
    failures = []
    for i, item in enumerate(items):
        for problem in check(item):
            failures.append(
                {
                    "label": item.get("label", f"#{i}"),
                    "era": item.get("era"),
                    "method": item.get("method"),
                    "kind": item.get("kind"),
                    "problem": problem,
                }
            )
    print(json.dumps({"checked": len(items), "failures": failures}))


if __name__ == "__main__":
    main()
