"""Asks funnel-ledger's NATS query service with nats-py, a client that is not ours.

Usage: nats_query.py NATS_URL < requests.json
requests.json: [{"subject": "...", "payload": "<text>"}, ...]
Prints one JSON list: per request, the reply's payload (base64) and headers.
"""
import asyncio
import base64
import json
import sys

import nats


async def main(url):
    requests = json.load(sys.stdin)
    client = await nats.connect(url)
    out = []
    for r in requests:
        reply = await client.request(r["subject"], r["payload"].encode(), timeout=40)
        out.append({
            "subject": r["subject"],
            "payload": base64.b64encode(reply.data).decode(),
            "headers": dict(reply.headers or {}),
        })
    await client.close()
    print(json.dumps(out))


asyncio.run(main(sys.argv[1]))
