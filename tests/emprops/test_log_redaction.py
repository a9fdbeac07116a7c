"""Secrets never reach a log line: staff keys in paths, token= values, API keys, bearer tokens."""

from __future__ import annotations

import logging

from emprops.middleware import RedactSecretsFilter, redact


def test_redact_covers_staff_paths_tokens_and_keys():
    line = ('GET /api/staff/ek_abcdefghijklmnop/workflows?token=eyJ.abc.def&x=1 '
            'Authorization: Bearer eyJhbGciOi.payload.sig X-API-Key: ek_zyxwvutsrqponmlk')

    clean = redact(line)

    assert "ek_abcdefghijklmnop" not in clean
    assert "eyJ.abc.def" not in clean
    assert "eyJhbGciOi.payload.sig" not in clean
    assert "ek_zyxwvutsrqponmlk" not in clean
    assert "/api/staff/[redacted]/workflows" in clean
    assert "&x=1" in clean


def test_filter_rewrites_formatted_records(caplog):
    logger = logging.getLogger("emprops.test.redaction")
    logger.addFilter(RedactSecretsFilter())
    try:
        with caplog.at_level(logging.WARNING, logger="emprops.test.redaction"):
            logger.warning("Not Found: %s", "/api/staff/ek_secretsecretsecret/servers")
    finally:
        logger.filters.clear()

    assert caplog.records[0].getMessage() == "Not Found: /api/staff/[redacted]/servers"
