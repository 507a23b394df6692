"""What runs and measures: entry points on top (run.py, tune.py, tuned.py, report.py, perf.py, score.py,
scaling.py, corpus.py; each also a console script ``objbench-<name>``) over four packages:

- ``runner``: a run's config composed and checked once (a Plan), one run trained and evaluated, tuning;
- ``evaluation``: the metrics of a trained model (teacher-forced, ground truth, generation);
- ``reporting``: runs read back, intervals over seeds, tables, plots, the scaling fit;
- ``performance``: the speed benchmark's harness, references and figures.
"""
