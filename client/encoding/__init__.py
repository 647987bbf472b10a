"""The encoding side: a member's export becomes CLKs on its own machine, offline.

    mapping.py      the member's mapping of its columns onto the schema (TOML)
    normalise.py    one normalisation for every member (case, accents, dates, ...)
    schema.py       the shared clkhash v3 linkage schema
    schemacheck.py  `blindmatch schema check`: weak designs, before anyone encodes
    encode.py       CSV export -> CLKs and the data-quality report
    harden.py       hardening of Bloom filters against frequency attacks
    fieldlevel.py   one filter per field (field-level schemas)
    fingerprint.py  the keyed fingerprint of (schema, secret) sent with uploads
    encoded.py      the ENCODED folder on disk
    person.py       one person from the command line, encoded as in an export
    refs.py         row references: what a standing index holds instead of local ids

Nothing here touches the network; the remote side (`client.remote`) sends what this
side produced.
"""
