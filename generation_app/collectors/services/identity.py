"""Collector identity: Sign-In with Ethereum (EIP-4361) nonces and logins.

A login proves control of a wallet: the message names an allowed domain, a configured chain and
a nonce this server issued (single use, expiring), and its signature recovers to the message's
address. The collector is an ordinary user (isolated like any other) with 0 credits: a wallet
sign-in is not a free-credits grant. Smart-contract wallets (EIP-1271) are not accepted: checking
them would call the chain on every login.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from emprops.accounts.services import user_provision
from emprops.errors import DomainError, ValidationFailed
from generation_app.collectors.eth import load as load_eth
from generation_app.collectors.models import ChainConfig, MiniappUser, SiweNonce

MAX_MESSAGE_CHARS = 4000


class SignInRefused(DomainError):
    status_code = 401
    code = "sign_in_refused"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, details={"reason": reason})


def nonce_issue() -> SiweNonce:
    """A fresh nonce for one sign-in message, valid SIWE_NONCE_SECONDS."""
    return SiweNonce.objects.create(
        nonce=secrets.token_hex(16),
        expires_at=timezone.now() + timedelta(seconds=settings.SIWE_NONCE_SECONDS))


def nonces_purge() -> int:
    """Delete nonces that can no longer sign anyone in; returns how many."""
    deleted, _ = SiweNonce.objects.filter(expires_at__lt=timezone.now() - timedelta(hours=1)
                                          ).delete()
    return int(deleted)


@dataclass(frozen=True)
class Farcaster:
    """Farcaster fields as the mini-app reports them (not verified here)."""

    fid: int | None = None
    username: str = ""
    pfp: str = ""


def _parse(message: str) -> Any:
    # siwe compiles its ABNF grammars on import (seconds): loaded on the first sign-in only
    load_eth()
    from pydantic import ValidationError
    from siwe import SiweMessage

    try:
        return SiweMessage.from_message(message)
    except ValidationError as exc:  # parsed, but a field is invalid (pydantic says which)
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()) or "?"
        raise ValidationFailed(f"Invalid Sign-In with Ethereum message: bad {fields}.",
                               details={"message": [f"Invalid field(s): {fields}."]}) from None
    except (ValueError, TypeError, LookupError):  # the grammar does not match
        raise ValidationFailed("Not a Sign-In with Ethereum (EIP-4361) message.",
                               details={"message": ["Not an EIP-4361 message."]}) from None


def collector_login(*, message: str, signature: str, host: str,
                    farcaster: Farcaster | None = None) -> MiniappUser:
    """The collector a signed EIP-4361 message proves (provisioned on first sign-in), consuming
    its nonce; SignInRefused (401) names why a message does not sign anyone in."""
    load_eth()
    import siwe
    from eth_keys.exceptions import BadSignature

    if len(message) > MAX_MESSAGE_CHARS:
        raise ValidationFailed("The message is too long.",
                               details={"message": [f"At most {MAX_MESSAGE_CHARS} characters."]})
    parsed = _parse(message)
    domains = settings.SIWE_DOMAINS or [host]
    if parsed.domain not in domains:
        raise SignInRefused(f"The message is for {parsed.domain}, not this site.",
                            reason="wrong_domain")
    chain_ids = set(ChainConfig.objects.filter(enabled=True).values_list("chain_id", flat=True))
    if int(parsed.chain_id) not in chain_ids:
        raise SignInRefused(f"Chain {parsed.chain_id} is not one this site sells on.",
                            reason="wrong_chain")
    try:
        parsed.verify(signature, domain=parsed.domain, nonce=parsed.nonce)
    except siwe.ExpiredMessage:
        raise SignInRefused("The message has expired.", reason="expired") from None
    except siwe.NotYetValidMessage:
        raise SignInRefused("The message is not valid yet.", reason="not_yet_valid") from None
    except (siwe.VerificationError, BadSignature, ValueError, TypeError):
        raise SignInRefused("The signature does not match the message's address.",
                            reason="bad_signature") from None
    now = timezone.now()
    used = SiweNonce.objects.filter(nonce=parsed.nonce, used_at__isnull=True,
                                    expires_at__gt=now).update(used_at=now)
    if not used:
        raise SignInRefused("The nonce is unknown, already used or expired; get a new one.",
                            reason="bad_nonce")
    return _collector_for(wallet=str(parsed.address), farcaster=farcaster)


def _collector_for(*, wallet: str, farcaster: Farcaster | None) -> MiniappUser:
    collector = MiniappUser.objects.select_related("user").filter(wallet_address=wallet).first()
    if collector is None:
        try:
            with transaction.atomic():
                user = user_provision(username=f"wallet-{wallet.lower()}",
                                      free_credits=Decimal(0))
                collector = MiniappUser.objects.create(user=user, wallet_address=wallet)
        except IntegrityError:  # the same wallet signed in concurrently
            collector = MiniappUser.objects.select_related("user").get(wallet_address=wallet)
    if farcaster is not None:
        collector.farcaster_id = farcaster.fid
        collector.farcaster_username = farcaster.username
        collector.farcaster_pfp = farcaster.pfp
        collector.save(update_fields=["farcaster_id", "farcaster_username", "farcaster_pfp",
                                      "updated_at"])
    return collector

