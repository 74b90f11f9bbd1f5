"""Package data: observation table, generated calibration output."""
