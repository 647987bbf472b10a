"""Privacy against the linkage service: attacks the matcher could run, and their scores.

- `client.tools.privacy.frequencies`: public frequency lists (what an attacker knows).
- `client.tools.privacy.attacks`: frequency alignment and pattern mining on encodings.
- `client.tools.privacy.check`: `blindmatch privacy-check` (encode, attack, report, plot).
- `client.tools.privacy.population`: seeded realistic people and organisations' exports.

The hardening transforms the attacks are measured against live in `client.encoding.harden`.
"""
