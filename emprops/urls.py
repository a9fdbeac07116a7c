from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from collections_app.api.staff_views import StaffCollectionListView
from emprops.api import api_not_found
from emprops.media import media
from emprops.views import ApiIndexView
from generation_app.api.ops_views import healthz, metrics
from generation_app.collectors.pages import collector_page

admin.site.site_header = "EmProps Collection Generation"
admin.site.site_title = "EmProps admin"
admin.site.index_title = "Collection Generation administration"

api_patterns: list[URLPattern | URLResolver] = [
    path("", ApiIndexView.as_view(schema=None)),  # `/api/`: documented once, as `/api`
    path("", include("emprops.accounts.api.urls")),
    path("", include("collections_app.api.urls")),
    path("", include("workflows_app.api.urls")),
    path("", include("jobs_app.api.urls")),
    path("", include("generation_app.api.urls")),
    path("", include("generation_app.api.workflow_urls")),
    path("", include("generation_app.api.extra_urls")),
    path("", include("generation_app.collectors.api.urls")),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^.*$", api_not_found),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("admin", RedirectView.as_view(pattern_name="admin:index")),
    # browsers ask for it on every origin page (admin, docs): the gallery's icon, not a 404
    path("favicon.ico", RedirectView.as_view(url=f"{settings.STATIC_URL}gallery/favicon.svg",
                                             permanent=True)),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/staff/<str:staff_key>/collections", StaffCollectionListView.as_view(), name="staff-collections"),
    path("api/staff/<str:staff_key>/", include("workflows_app.api.staff_urls")),
    path("api/", include(api_patterns)),
    path("api", ApiIndexView.as_view(), name="api-index"),
    # local files: a redirect to the user-content origin (emprops/media.py); S3/CDN serve themselves
    re_path(r"^media/(?P<path>.*)$", media),
    # a collector's generations, signed in with a wallet (generation_app/collectors/pages.py)
    path("collector", collector_page, name="collector-gallery"),
    # the gallery: `/`, `/c/<id>`, `/p/<id>`, `/accounts/login/` (generation_app/gallery/)
    path("", include("generation_app.gallery.urls")),
]

handler400 = "emprops.api.bad_request"
handler403 = "emprops.api.permission_denied"
handler404 = "emprops.api.api_not_found"
handler500 = "emprops.api.server_error"
