"""Storage: everything the matcher keeps, in one data dir (SQLite and CLK files).

`Store` (store.py) is the batch side's state in `blindmatch.sqlite` and `clks/`, one
concern per module (projects and tokens, uploads, runs, retention, the audit log);
`IndexStore` the real-time side's, in `index.sqlite`. `datadir.py` names every file;
`sqlite.py` is the transaction discipline both databases share.
"""
