from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from rest_framework import serializers

from emprops.accounts.models import CreditsHistory, CreditType, UserApiKey


class TokenObtainInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenRefreshInputSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class TokenOutputSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()


def _in_the_future(value: datetime) -> None:
    # a key born expired could never authenticate; the service itself accepts any time, so
    # that expiry can be exercised without waiting for it
    if value <= timezone.now():
        raise serializers.ValidationError("Must be a time in the future.")


class ApiKeyCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, default="default")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                           validators=[_in_the_future])


class ApiKeyOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = UserApiKey
        fields = ["id", "name", "prefix", "is_active", "expires_at", "last_used_at", "created_at"]


class ApiKeyCreatedOutputSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(help_text="The key itself: shown once, store it now.")

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = [*ApiKeyOutputSerializer.Meta.fields, "key"]


class BalancesOutputSerializer(serializers.Serializer):
    rental = serializers.CharField()
    permanent = serializers.CharField()


class MeOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    username = serializers.CharField()
    external_sub = serializers.CharField(allow_null=True)
    is_staff = serializers.BooleanField()
    balances = BalancesOutputSerializer()
    total = serializers.CharField()
    held = serializers.CharField()
    available = serializers.CharField()


class CreditsHistoryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = CreditsHistory
        fields = ["id", "flow", "amount", "credit_type", "comment", "job_id", "gid", "created_at"]


class CreditsGrantInputSerializer(serializers.Serializer):
    user_id = serializers.UUIDField()
    amount = serializers.DecimalField(max_digits=18, decimal_places=4)
    credit_type = serializers.ChoiceField(choices=CreditType.choices,
                                          default=CreditType.PERMANENT)
    comment = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)
