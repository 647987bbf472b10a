"""Tools around the member's job, apart from encoding and the matcher connection.

privacy/      `blindmatch privacy-check`: attack encodings as the matcher could
evaluate.py   precision, recall and F1 against known truth (`blindmatch evaluate`)
plots.py      the evaluation's PNG plots
synthetic.py  seeded synthetic exports for the demo and tests
report.py     what a member learnt from a run, gathered for `blindmatch report`
report_html.py  ... rendered as one self-contained HTML page
charts.py     the report's SVG charts
demo.py       the whole flow on synthetic data (`blindmatch demo`)
certs.py      throwaway certificates for trials (`blindmatch certs`)
"""

from pathlib import Path

# The linkage schemas shipped with blindmatch (schemas/ in a checkout, packaged in a wheel).
SCHEMAS = Path(__file__).parents[2] / "schemas"
