"""Verifies webhook calls with the Standard Webhooks reference library.

Reads {"secrets": {name: "whsec_..."}, "calls": [{"body": str, "headers": {...}}]}
on stdin and prints, per call, each secret's verdict: "ok" or "rejected: why".
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

data = json.load(sys.stdin)
verdicts = []
for call in data["calls"]:
    verdict = {}
    for name, secret in data["secrets"].items():
        try:
            Webhook(secret).verify(call["body"], call["headers"])
            verdict[name] = "ok"
        except WebhookVerificationError as e:
            verdict[name] = f"rejected: {e}"
    verdicts.append(verdict)
print(json.dumps(verdicts))
