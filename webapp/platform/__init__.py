"""Infrastructure: the Flask extensions, the RQ queue, Redis clients."""
