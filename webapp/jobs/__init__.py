"""Background jobs on RQ: report generation and the nightly maintenance (enqueued by dotted path)."""
