from django.urls import path

from generation_app.collectors.api import views

urlpatterns = [
    path("collectors/nonce", views.CollectorNonceView.as_view(), name="collector-nonce"),
    path("collectors/login", views.CollectorLoginView.as_view(), name="collector-login"),
    path("collectors/me", views.CollectorMeView.as_view(), name="collector-me"),
    path("collectors/me/purchases", views.CollectorPurchaseListView.as_view(),
         name="collector-purchases"),
    path("collectors/me/generations", views.CollectorGenerationListView.as_view(),
         name="collector-generations"),
    path("collections/<uuid:collection_id>/purchases", views.CollectionPurchaseView.as_view(),
         name="collection-purchases"),
    path("collections/<uuid:collection_id>/collect", views.CollectionCollectView.as_view(),
         name="collection-collect"),
    path("collections/<uuid:collection_id>/sales", views.CollectionSaleListView.as_view(),
         name="collection-sales"),
    path("collections/<uuid:collection_id>/collectors",
         views.CollectionCollectorListView.as_view(), name="collection-collectors"),
]
