"""The plugin machinery: the hook specifications, the plugin manager (entry-point group ``shieldkit``), the
registry that holds every name, and the built-in ``native`` plugin."""
