"""What users read: solver comparisons, HTML/Markdown reports, plots and the benchmark."""
