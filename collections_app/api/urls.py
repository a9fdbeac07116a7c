from django.urls import path

from collections_app.api import files, views

urlpatterns = [
    path("projects", views.ProjectListCreateView.as_view(), name="projects"),
    path("projects/collections", views.CollectionCreateView.as_view(), name="collection-create"),
    path("projects/<uuid:project_id>", views.ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<uuid:project_id>/collections", views.ProjectCollectionListView.as_view(),
         name="project-collections"),
    path("projects/<uuid:project_id>/collections/<uuid:collection_id>",
         views.ProjectCollectionDetailView.as_view(), name="project-collection-detail"),
    path("me/collections", views.MyCollectionListView.as_view(), name="my-collections"),
    path("collections", views.PublicCollectionListView.as_view(), name="public-collections"),
    path("collections/<uuid:collection_id>", views.CollectionDetailView.as_view(),
         name="collection-detail"),
    path("collections/<uuid:collection_id>/public", views.PublicCollectionDetailView.as_view(),
         name="collection-public"),
    path("collections/<uuid:collection_id>/publish", views.CollectionPublishView.as_view(),
         name="collection-publish"),
    path("collections/<uuid:collection_id>/archive", views.CollectionArchiveView.as_view(),
         name="collection-archive"),
    path("collections/<uuid:collection_id>/preview", views.CollectionPreviewView.as_view(),
         name="collection-preview"),
    path("collections/<uuid:collection_id>/remix", views.CollectionRemixView.as_view(),
         name="collection-remix"),
    path("collections/<uuid:collection_id>/history", views.CollectionHistoryView.as_view(),
         name="collection-history"),
    path("collections/<uuid:collection_id>/files", views.CollectionFilesView.as_view(),
         name="collection-files"),
    path("files", files.FileListCreateView.as_view(), name="files"),
    path("files/<int:file_id>", files.FileDetailView.as_view(), name="file-detail"),
]
