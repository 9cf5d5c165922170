"""The history package: replay and repair, monthly partitions, CSV reports, a segment's trail."""
