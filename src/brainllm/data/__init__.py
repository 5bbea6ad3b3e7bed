"""Data: the prepared dataset format, splits, preprocessing, the simulated participant and real-data readers."""
