"""`/api/files`: users' input uploads (used as URLs in `image_loader` fields) and their files."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collections_app import selectors, services_files
from collections_app.models import FlatFile
from emprops.parsers import MultiPartParser
from emprops.storage import public_url
from emprops.views import ViewerListView


class FileUploadInputSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)


class UserFileOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.UUIDField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = FlatFile
        fields = ["id", "user_id", "name", "url", "mime_type", "rel_type", "rel_id", "hidden",
                  "tags", "features", "job_id", "created_at"]

    def get_url(self, obj: FlatFile) -> str:
        return public_url(obj.storage_key)


class FileListCreateView(ViewerListView):
    parser_classes = [MultiPartParser]  # the one upload endpoint: the API is JSON elsewhere
    serializer_class = UserFileOutputSerializer
    filterset_fields = ["rel_type", "mime_type", "hidden"]
    search_fields = ["name"]
    ordering_fields = ["created_at", "name"]

    def list_for_viewer(self) -> Any:
        return selectors.file_list(user=self.request.user)

    @extend_schema(request={"multipart/form-data": FileUploadInputSerializer},
                   responses={201: UserFileOutputSerializer},
                   summary="Upload an input file (image, video, audio or text; size-limited)")
    def post(self, request: Request) -> Response:
        body = FileUploadInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        flat_file = services_files.file_upload(user=request.user,
                                               upload=body.validated_data["file"])
        return Response(UserFileOutputSerializer(flat_file).data, status=status.HTTP_201_CREATED)


class FileDetailView(APIView):
    @extend_schema(responses=UserFileOutputSerializer, summary="One of your files")
    def get(self, request: Request, file_id: int) -> Response:
        flat_file = selectors.flat_file_get(user=request.user, file_id=file_id)
        return Response(UserFileOutputSerializer(flat_file).data)
