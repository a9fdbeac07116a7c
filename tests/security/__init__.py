"""Cross-cutting security checks: object access, credentials, SSRF, the JS sandbox, browser egress."""
