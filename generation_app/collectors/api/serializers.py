from __future__ import annotations

from rest_framework import serializers

from generation_app.collectors.models import MiniappGeneration, MiniappPayment, MiniappUser


class CollectorNonceOutputSerializer(serializers.Serializer):
    nonce = serializers.CharField()
    expires_at = serializers.DateTimeField()


class CollectorLoginInputSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=4000, trim_whitespace=False,
                                    help_text="The signed EIP-4361 message, as signed.")
    signature = serializers.RegexField(r"^0x[0-9a-fA-F]{130}$",
                                       help_text="The wallet's personal_sign signature (65 bytes).")
    farcaster_id = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                            max_value=2**63 - 1)
    farcaster_username = serializers.CharField(required=False, allow_blank=True, max_length=100)
    farcaster_pfp = serializers.URLField(required=False, allow_blank=True, max_length=1000)


class CollectorOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(source="user.id", read_only=True)

    class Meta:
        model = MiniappUser
        fields = ["id", "user_id", "wallet_address", "farcaster_id", "farcaster_username",
                  "farcaster_pfp", "created_at"]


class CollectorLoginOutputSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()
    collector = CollectorOutputSerializer()


class CollectorSummaryOutputSerializer(serializers.Serializer):
    collector = CollectorOutputSerializer()
    generations_paid = serializers.IntegerField()
    generations_used = serializers.IntegerField()
    generations_pending = serializers.IntegerField()


class PurchaseInputSerializer(serializers.Serializer):
    tx_hash = serializers.CharField(max_length=66, help_text="0x followed by 64 hex digits.")


class PurchaseOutputSerializer(serializers.ModelSerializer):
    amount = serializers.CharField(help_text="Wei paid, as a decimal string.")
    collection_id = serializers.UUIDField(read_only=True)
    generations_left = serializers.SerializerMethodField()

    class Meta:
        model = MiniappPayment
        fields = ["id", "collection_id", "transaction_hash", "blockchain", "chain_id", "method",
                  "amount", "payment_status", "generations_allowed", "generations_used",
                  "generations_left", "block_number", "failure_reason", "created_at",
                  "confirmed_at"]

    def get_generations_left(self, obj: MiniappPayment) -> int:
        if obj.payment_status != MiniappPayment.Status.CONFIRMED:
            return 0
        return obj.generations_allowed - obj.generations_used


class SaleOutputSerializer(PurchaseOutputSerializer):
    collector = CollectorOutputSerializer(source="user", read_only=True)

    class Meta(PurchaseOutputSerializer.Meta):
        fields = [*PurchaseOutputSerializer.Meta.fields, "collector"]


class CollectionCollectorOutputSerializer(CollectorOutputSerializer):
    purchases = serializers.IntegerField()
    generations_paid = serializers.IntegerField(allow_null=True)
    generations_used = serializers.IntegerField(allow_null=True)
    wei_paid = serializers.CharField(allow_null=True)
    last_purchase_at = serializers.DateTimeField()

    class Meta(CollectorOutputSerializer.Meta):
        fields = [*CollectorOutputSerializer.Meta.fields, "purchases", "generations_paid",
                  "generations_used", "wei_paid", "last_purchase_at"]


class CollectedGenerationOutputSerializer(serializers.ModelSerializer):
    collection_id = serializers.UUIDField(read_only=True)
    collection_title = serializers.CharField(source="collection.title", read_only=True)
    payment_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = MiniappGeneration
        fields = ["id", "collection_id", "collection_title", "payment_id", "status",
                  "input_data", "output_url", "generated_image", "output_data", "error",
                  "created_at", "settled_at"]
