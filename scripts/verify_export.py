#!/usr/bin/env python3
"""Verify a funnel-ledger export (chain format 2) from the specification alone.

Written from schemas/chain.md, standard library only, sharing no code with the service.
Usage: verify_export.py EXPORT.ndjson
Prints the head (seq and hash) and exits 0, or names the first bad seq and exits 1.
"""
import decimal
import hashlib
import json
import sys


def jcs_number(x):
    """RFC 8785 §3.2.2.3: a number as ECMAScript's Number.prototype.toString writes it."""
    if isinstance(x, int):
        return str(x)  # the spec keeps integers below 2^53, where this is exact
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    t = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(map(str, t.digits))
    k, n = len(digits), len(t.digits) + t.exponent  # value = 0.digits * 10^n
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * -n + digits
    else:
        e = n - 1
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + s


def jcs(v):
    """RFC 8785 canonical JSON."""
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return jcs_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(v[k]) for k in keys) + "}"


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in a JSON object")
    return dict(pairs)


def verify(lines):
    """(head seq, head hash) or raises ValueError('seq N: reason')."""
    header = json.loads(next(lines), object_pairs_hook=no_duplicate_keys)
    if header.get("format") != "funnel-ledger-export" or header.get("version") != 2:
        raise ValueError("not a funnel-ledger export of chain format 2")
    migrated = header.get("migrated_from")
    genesis = "0" * 64 if migrated is None else sha256(jcs({"migrated_from": migrated}))
    if header.get("genesis") != genesis:
        raise ValueError("header: genesis does not match migrated_from")
    seq, prev = 0, genesis
    for line in lines:
        if not line.strip():
            continue
        seq += 1
        try:
            e = json.loads(line, object_pairs_hook=no_duplicate_keys)
        except ValueError as err:
            raise ValueError(f"seq {seq}: not JSON ({err})")
        if e.get("seq") != seq:
            raise ValueError(f"seq {seq}: found seq {e.get('seq')}")
        if e.get("prev_hash") != prev:
            raise ValueError(f"seq {seq}: prev_hash does not match the previous entry's hash")
        doc = {"event": e["event"], "prev_hash": prev, "recorded_at": e["recorded_at"], "seq": seq}
        if sha256(jcs(doc)) != e.get("hash"):
            raise ValueError(f"seq {seq}: hash does not match the entry's content")
        prev = e["hash"]
    return seq, prev


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: verify_export.py EXPORT.ndjson")
    with open(sys.argv[1], encoding="utf-8") as f:
        try:
            seq, head = verify(iter(f))
        except (ValueError, KeyError, StopIteration) as err:
            print(f"BAD {err}")
            sys.exit(1)
    print(f"OK head seq {seq} hash {head}")


if __name__ == "__main__":
    main()
