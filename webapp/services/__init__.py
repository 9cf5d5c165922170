"""Every business rule; views only parse input and render output (layering: pyproject.toml [tool.importlinter])."""
