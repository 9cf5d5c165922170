"""The soak (issue 22): ``make soak`` (``SOAK_SECONDS``, default 600); skipped by ``make test``."""
