"""Finished runs read back and compared: intervals over seeds, paired differences, tables, plots, fits."""
