"""Built-in plugins: ordinary plugin modules, listed in ``core.plugins.DEFAULT_PLUGINS``."""
