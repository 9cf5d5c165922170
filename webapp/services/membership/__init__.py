"""The membership package: the membership rule, its one writer, per-user and bulk changes."""
