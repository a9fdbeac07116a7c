"""Loopback test peers: real servers that speak third-party protocols (ComfyUI, ...)."""
