from django.contrib.auth import views as auth_views
from django.urls import path

from generation_app.gallery import views

urlpatterns = [
    path("", views.home, name="gallery-home"),
    path("c/<uuid:collection_id>", views.collection_page, name="gallery-collection"),
    path("c/<uuid:collection_id>/generate", views.collection_generate, name="gallery-generate"),
    path("c/<uuid:collection_id>/jobs/<uuid:job_id>/live", views.job_live,
         name="gallery-job-live"),
    path("p/<uuid:collection_id>", views.public_page, name="gallery-public"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="gallery/login.html",
                                                         redirect_authenticated_user=True),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
