"""The local stack, for development only (never installed in the production image): embedded
PostgreSQL and Redis from pip packages (``devstack.embedded``) and ``make run``'s supervisor of
the production processes (``devstack.stack``). Nothing in ``webapp`` imports it."""
