"""macOS backend: utun (TUN) and feth pairs (TAP)."""
