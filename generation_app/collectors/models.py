"""Collectors (wallet users), their on-chain payments and the generations they collect, plus what
staff configure to verify payments: a chain per blockchain, a listing per collection, payout
addresses. Amounts are integer wei in NUMERIC(78, 0) columns (a uint256 fits), never floats."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

# uint256 has at most 78 decimal digits
WEI_DIGITS = 78


class ChainConfig(models.Model):
    """An EVM chain as staff configure it: where to read it and what a sale on it looks like."""

    class Blockchain(models.TextChoices):
        # the EVM chains of Collection.blockchain (TEZOS is not EVM)
        ETHEREUM = "ETHEREUM"
        BASE = "BASE"

    blockchain = models.CharField(max_length=16, choices=Blockchain.choices, unique=True)
    rpc_url = models.CharField(max_length=500, help_text="EVM JSON-RPC URL, http(s).")
    chain_id = models.BigIntegerField()
    required_confirmations = models.PositiveIntegerField(default=3)
    mint_contract_address = models.CharField(max_length=42, blank=True, default="")
    mint_contract_abi = models.JSONField(default=list, blank=True,
                                         help_text="The mint contract's ABI (a JSON list).")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "collector_chain"
        verbose_name = "chain"

    def __str__(self) -> str:
        return f"{self.blockchain} (chain {self.chain_id})"


class OwnerPayout(models.Model):
    """A collection owner's payout address, used by their listings that name none."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="payout_address")
    address = models.CharField(max_length=42)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "collector_owner_payout"

    def __str__(self) -> str:
        return self.address


class CollectionListing(models.Model):
    """A collection for sale on its chain: its on-chain id, its price in wei, where direct
    payments go, and how many of its editions purchases have reserved."""

    collection = models.OneToOneField("collections_app.Collection", on_delete=models.CASCADE,
                                      related_name="listing")
    onchain_collection_id = models.DecimalField(max_digits=WEI_DIGITS, decimal_places=0,
                                                null=True, blank=True)
    price_wei = models.DecimalField(max_digits=WEI_DIGITS, decimal_places=0)
    payout_address = models.CharField(max_length=42, blank=True, default="",
                                      help_text="Blank: the owner's payout address.")
    editions_reserved = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "collector_listing"
        constraints = [models.CheckConstraint(condition=models.Q(price_wei__gt=0),
                                              name="listing_price_positive")]

    def __str__(self) -> str:
        return f"{self.collection_id} at {self.price_wei} wei"


class MiniappUser(models.Model):
    """A collector: a user who signed in with a wallet (Farcaster fields as the mini-app gave
    them, unverified)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="collector")
    wallet_address = models.CharField(max_length=42, unique=True)  # EIP-55 checksummed
    farcaster_id = models.BigIntegerField(null=True, blank=True)
    farcaster_username = models.CharField(max_length=100, blank=True, default="")
    farcaster_pfp = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "miniapp_user"
        verbose_name = "collector"

    def __str__(self) -> str:
        return self.farcaster_username or self.wallet_address


class MiniappPayment(models.Model):
    """One on-chain payment for generations of one collection; a transaction pays once, ever."""

    class Status(models.TextChoices):
        PENDING = "pending"  # seen, not yet confirmed: rechecked at next_attempt_at
        CONFIRMED = "confirmed"
        FAILED = "failed"  # a pending payment that did not confirm (reverted, dropped)

    class Method(models.TextChoices):
        DIRECT = "direct"  # native coin sent to the payout address
        MINT = "mint"  # the mint contract's payable mint(...)

    user = models.ForeignKey(MiniappUser, on_delete=models.PROTECT, related_name="payments")
    collection = models.ForeignKey("collections_app.Collection", on_delete=models.PROTECT,
                                   related_name="miniapp_payments")
    amount = models.DecimalField(max_digits=WEI_DIGITS, decimal_places=0)  # wei paid
    payment_status = models.CharField(max_length=16, choices=Status.choices,
                                      default=Status.PENDING)
    generations_allowed = models.PositiveIntegerField()
    generations_used = models.PositiveIntegerField(default=0)
    transaction_hash = models.CharField(max_length=66, unique=True)  # lower-case 0x + 64 hex
    blockchain = models.CharField(max_length=16)
    chain_id = models.BigIntegerField()
    method = models.CharField(max_length=8, choices=Method.choices)
    block_number = models.BigIntegerField(null=True, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # set by the service (the same instant as `confirmed_at` for a payment confirmed at once)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "miniapp_payment"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(generations_used__lte=models.F("generations_allowed")),
                name="payment_used_within_allowed"),
        ]
        indexes = [
            models.Index(fields=["payment_status", "next_attempt_at"]),
            models.Index(fields=["user", "collection", "payment_status"]),
        ]

    def __str__(self) -> str:
        return self.transaction_hash


class MiniappGeneration(models.Model):
    """One collect: a paid generation spent, the owner's job that runs it and its output."""

    class Status(models.TextChoices):
        IDLE = "idle"
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"

    user = models.ForeignKey(MiniappUser, on_delete=models.PROTECT, related_name="generations")
    collection = models.ForeignKey("collections_app.Collection", on_delete=models.PROTECT,
                                   related_name="miniapp_generations")
    payment = models.ForeignKey(MiniappPayment, on_delete=models.PROTECT,
                                related_name="generations")
    job = models.ForeignKey("jobs_app.Job", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="+")
    input_data = models.JSONField(default=dict, blank=True)
    output_url = models.CharField(max_length=1000, blank=True, default="")
    output_data = models.JSONField(null=True, blank=True)
    generated_image = models.CharField(max_length=1000, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IDLE)
    error = models.TextField(blank=True, default="")
    # set once, when the job's outcome was recorded here (and a failed one's generation given back)
    settled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "miniapp_generation"
        ordering = ["-created_at", "-id"]
        indexes = [
            # the housekeeping pass looks for these every few seconds
            models.Index(fields=["id"], condition=models.Q(settled_at__isnull=True),
                         name="miniapp_gen_unsettled"),
            models.Index(fields=["user", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.collection_id} for {self.user_id} ({self.status})"


class SiweNonce(models.Model):
    """A Sign-In with Ethereum nonce: single use, expiring."""

    nonce = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "collector_siwe_nonce"
