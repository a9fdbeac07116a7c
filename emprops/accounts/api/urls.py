from django.urls import path

from emprops.accounts.api import views

urlpatterns = [
    path("auth/token", views.TokenObtainView.as_view(), name="auth-token"),
    path("auth/token/refresh", views.TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("me", views.MeView.as_view(), name="me"),
    path("api-keys", views.ApiKeyListCreateView.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>", views.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    path("credits/history", views.CreditsHistoryView.as_view(), name="credits-history"),
    path("credits/grants", views.CreditsGrantView.as_view(), name="credits-grants"),
]
