"""The segments package: segment lifecycle, restore, the segment event log."""
