from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.http import HttpRequest

from emprops.accounts import services
from emprops.accounts.models import CreditsBalance, CreditsHistory, CreditsHold, User, UserApiKey


class BalanceInline(admin.TabularInline):
    model = CreditsBalance
    extra = 0
    readonly_fields = ["credit_type", "balance", "updated_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "id", "external_sub", "is_staff", "is_active", "date_joined"]
    search_fields = ["username", "external_sub", "email", "id"]
    fieldsets = (*(BaseUserAdmin.fieldsets or ()),
                 ("EmProps", {"fields": ("external_sub", "max_generations_override")}))
    inlines = [BalanceInline]


@admin.register(UserApiKey)
class UserApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "is_active", "is_demo", "expires_at", "last_used_at",
                    "created_at"]
    list_filter = ["is_active", "is_demo"]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["prefix", "key_hash", "last_used_at", "created_at"]
    actions = ["revoke"]

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        queryset.update(is_active=False)


@admin.register(CreditsBalance)
class CreditsBalanceAdmin(admin.ModelAdmin):
    list_display = ["user", "credit_type", "balance", "updated_at"]
    list_filter = ["credit_type"]
    search_fields = ["user__username", "user__id"]

    # balances change only through ledger rows
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["user", "credit_type", "balance", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(CreditsHold)
class CreditsHoldAdmin(admin.ModelAdmin):
    list_display = ["job_id", "user", "amount", "remaining", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["job_id", "user__username"]
    readonly_fields = [f.name for f in CreditsHold._meta.fields]


@admin.register(CreditsHistory)
class CreditsHistoryAdmin(admin.ModelAdmin):
    """Staff adjust balances by adding a ledger row here (never by editing a balance)."""

    list_display = ["created_at", "user", "flow", "amount", "credit_type", "comment", "job_id"]
    list_filter = ["flow", "credit_type"]
    search_fields = ["user__username", "comment", "job_id"]
    fields = ["user", "flow", "amount", "credit_type", "comment"]
    autocomplete_fields = ["user"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: CreditsHistory, form: Any, change: bool) -> None:
        amount = obj.amount if obj.flow == CreditsHistory.Flow.IN else -obj.amount
        try:
            row = services.credits_grant(user=obj.user, amount=amount, credit_type=obj.credit_type,
                                         comment=obj.comment or "Admin adjustment",
                                         created_by=request.user)  # type: ignore[arg-type]
        except Exception as exc:  # a refused adjustment is shown, not raised
            messages.error(request, str(exc))
            return
        obj.pk = row.pk
