"""Reading training runs and reporting on them; pure analysis (no verl, no games).

- ``runs``: verl's file-logger JSONL, run folders (method, seed), final evaluations.
- ``tables``: the results table (mean ± std over seeds of each run's last-N validation points).
- ``plots``: every figure, over runs and for one run.
- ``report``: the ``verl-epo-report`` command (table and figures over runs).
- ``study``: the mini-study's report (entropy runaways, tokens above the band, warm starts).
"""
