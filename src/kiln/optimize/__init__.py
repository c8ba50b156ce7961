"""Optimization passes: the default CPU schedules (no tuning needed)."""
