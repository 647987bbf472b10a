"""Privacy against the linkage service: attacks the matcher could run, and their scores.

- `client.privacy.frequencies`: public frequency lists (what an attacker knows).
- `client.privacy.attacks`: frequency alignment, pattern mining and q-gram alignment.
- `client.privacy.graph`: the graph-matching attack on similarity graphs;
  `client.privacy.graphcheck` runs it on what a schema uploads.
- `client.privacy.check`: `blindmatch privacy-check` (encode, attack, report);
  `client.privacy.plot` its chart and files.
- `client.privacy.population`: seeded realistic people and organisations' exports.

The hardening transforms the attacks are measured against live in `client.harden`.
"""
