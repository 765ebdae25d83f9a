"""The results library of bench/: reading report runs (`runs`), paired statistics against unsteered (`paired`)
and the markdown tables and plot made from them (`tables`, `plot`). `bench/report.py` runs configurations and
writes a report with it; `paired_retention.py`, `generations.py` and `continuation_fluency.py` read its runs."""
