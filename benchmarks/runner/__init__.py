"""From a command line to results: a config composed and checked once, one run, tuning."""
