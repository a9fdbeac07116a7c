from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from collections_app.api.staff_views import StaffCollectionListView
from emprops.api import api_not_found
from emprops.media import media

api_patterns: list[URLPattern | URLResolver] = [
    path("", include("emprops.accounts.api.urls")),
    path("", include("collections_app.api.urls")),
    path("", include("workflows_app.api.urls")),
    path("", include("jobs_app.api.urls")),
    path("", include("generation_app.api.urls")),
    path("", include("generation_app.api.workflow_urls")),
    path("", include("generation_app.api.extra_urls")),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^.*$", api_not_found),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/staff/<str:staff_key>/collections", StaffCollectionListView.as_view(), name="staff-collections"),
    path("api/staff/<str:staff_key>/", include("workflows_app.api.staff_urls")),
    path("api/", include(api_patterns)),
    re_path(r"^api$", api_not_found),
    # local files: a redirect to the user-content origin (emprops/media.py); S3/CDN serve themselves
    re_path(r"^media/(?P<path>.*)$", media),
]

handler400 = "emprops.api.bad_request"
handler403 = "emprops.api.permission_denied"
handler404 = "emprops.api.api_not_found"
handler500 = "emprops.api.server_error"
