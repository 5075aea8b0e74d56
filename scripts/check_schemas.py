"""Validates NDJSON events from stdin against schemas/; prints one JSON verdict per line.

Used by tests/schemas.rs to hold the schemas and the Rust validator to the same verdicts.
"""
import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource

root = pathlib.Path(__file__).resolve().parent.parent / "schemas"
schemas = {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in root.glob("*.schema.json")}
registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
validators = {name: jsonschema.Draft202012Validator(s, registry=registry) for name, s in schemas.items()}

for line in sys.stdin:
    event = json.loads(line)
    kind = event.get("type") if isinstance(event, dict) else None
    validator = validators.get(kind) if isinstance(kind, str) and kind != "envelope" else None
    validator = validator or validators["envelope"]
    errors = [e.message for e in validator.iter_errors(event)]
    print(json.dumps({"valid": not errors, "errors": errors[:3]}))
