"""The reads package: the hot read and batch lookup, the catalog, reach."""
