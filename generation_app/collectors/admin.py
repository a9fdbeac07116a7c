"""Admin for collectors: staff configure chains (RPC URL, chain id, confirmations, the mint
contract's address and ABI), listings (on-chain id, price in wei, payout address) and owners'
payout addresses; sales, collectors and collects are read-only records."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from generation_app.collectors.chain import abi_errors, checksum, rpc_url_errors
from generation_app.collectors.models import (
    ChainConfig,
    CollectionListing,
    MiniappGeneration,
    MiniappPayment,
    MiniappUser,
    OwnerPayout,
)


def _address(value: Any, *, required: bool) -> str:
    text = str(value or "").strip()
    if not text and not required:
        return ""
    normal = checksum(text)
    if normal is None:
        raise forms.ValidationError("Not an Ethereum address (0x followed by 40 hex digits).")
    return normal


class ChainConfigForm(forms.ModelForm):
    class Meta:
        model = ChainConfig
        fields = ["blockchain", "rpc_url", "chain_id", "required_confirmations",
                  "mint_contract_address", "mint_contract_abi", "enabled"]

    def clean_rpc_url(self) -> str:
        url = str(self.cleaned_data["rpc_url"]).strip()
        errors = rpc_url_errors(url)
        if errors:
            raise forms.ValidationError(errors)
        return url

    def clean_mint_contract_address(self) -> str:
        return _address(self.cleaned_data.get("mint_contract_address"), required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        abi = data.get("mint_contract_abi")
        if data.get("mint_contract_address") or abi:
            errors = abi_errors(abi)
            if errors:
                self.add_error("mint_contract_abi", errors)
        return data


@admin.register(ChainConfig)
class ChainConfigAdmin(admin.ModelAdmin):
    form = ChainConfigForm
    list_display = ["blockchain", "chain_id", "rpc_url", "required_confirmations",
                    "mint_contract_address", "enabled"]


class CollectionListingForm(forms.ModelForm):
    class Meta:
        model = CollectionListing
        fields = ["collection", "onchain_collection_id", "price_wei", "payout_address"]

    def clean_payout_address(self) -> str:
        return _address(self.cleaned_data.get("payout_address"), required=False)

    def clean_collection(self) -> Any:
        # purchases read the collection's own blockchain (`sale_for`): a listing of a collection
        # on no chain, or on TEZOS, could be saved but never sold
        collection = self.cleaned_data.get("collection")
        if collection is not None and collection.blockchain not in ChainConfig.Blockchain.values:
            on = f"is on {collection.blockchain}, not an EVM chain" if collection.blockchain \
                else "is on no blockchain"
            raise forms.ValidationError(
                f"This collection {on}: set its blockchain to "
                f"{' or '.join(ChainConfig.Blockchain.labels)} (Collections) before listing it.")
        return collection


@admin.register(CollectionListing)
class CollectionListingAdmin(admin.ModelAdmin):
    form = CollectionListingForm
    list_display = ["collection", "blockchain", "onchain_collection_id", "price_wei",
                    "payout_address", "editions_reserved"]
    list_select_related = ["collection"]
    readonly_fields = ["editions_reserved"]
    raw_id_fields = ["collection"]

    @admin.display(description="blockchain", ordering="collection__blockchain")
    def blockchain(self, obj: CollectionListing) -> str:
        return obj.collection.blockchain or "-"


class OwnerPayoutForm(forms.ModelForm):
    class Meta:
        model = OwnerPayout
        fields = ["user", "address"]

    def clean_address(self) -> str:
        return _address(self.cleaned_data.get("address"), required=True)


@admin.register(OwnerPayout)
class OwnerPayoutAdmin(admin.ModelAdmin):
    form = OwnerPayoutForm
    list_display = ["user", "address", "updated_at"]
    raw_id_fields = ["user"]


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(MiniappUser)
class MiniappUserAdmin(_ReadOnly):
    list_display = ["wallet_address", "farcaster_username", "farcaster_id", "user", "created_at"]
    search_fields = ["wallet_address", "farcaster_username"]


@admin.register(MiniappPayment)
class MiniappPaymentAdmin(_ReadOnly):
    list_display = ["transaction_hash", "collection", "user", "method", "amount",
                    "payment_status", "generations_allowed", "generations_used", "created_at"]
    list_filter = ["payment_status", "method", "blockchain"]
    search_fields = ["transaction_hash", "user__wallet_address", "collection__title"]


@admin.register(MiniappGeneration)
class MiniappGenerationAdmin(_ReadOnly):
    list_display = ["id", "collection", "user", "status", "job", "output_url", "created_at"]
    list_filter = ["status"]
    search_fields = ["user__wallet_address", "collection__title"]
