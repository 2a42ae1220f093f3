"""pytest11 entry point `tunlab` (fixtures arrive with the plugin issue)."""
