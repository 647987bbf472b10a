"""Privacy against the linkage service: attacks the matcher could run, and their scores.

- `client.tools.privacy.frequencies`: public frequency lists (what an attacker knows).
- `client.tools.privacy.attacks`: frequency alignment, pattern mining and q-gram alignment.
- `client.tools.privacy.graph`: the graph-matching attack on similarity graphs;
  `client.tools.privacy.graphcheck` runs it on what a schema uploads.
- `client.tools.privacy.check`: `blindmatch privacy-check` (encode, attack, report);
  `client.tools.privacy.plot` its chart and files.
- `client.tools.privacy.population`: seeded realistic people and organisations' exports.

The hardening transforms the attacks are measured against live in `client.encoding.harden`.
"""
