"""Entry points (run, tune, report, perf, score) and evaluation."""
