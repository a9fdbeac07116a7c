"""The Studio's calls kept from the existing platform: `POST /api/projects/untitled`,
`POST /api/instruction-sets/convert` (v1 -> v2) and `POST /api/instruction-sets/linter`."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from collections_app import services_instruction_sets as services
from collections_app.api import serializers as s

_V1_EXAMPLE = OpenApiExample("a v1 instruction set", request_only=True, value={
    "variables": [{"name": "animal", "type": "pick", "value_type": "strings",
                   "value": {"values": ["cat", "owl"], "weights": [1, 1],
                             "display_names": ["", ""]},
                   "is_feature": True, "feature_name": "Animal", "use_display_name": False}],
    "hashes": [], "generations": 1, "use_custom_hashes": False,
    "stable_diffusion_input": {"prompt": "a {{animal}} in the snow", "negative_prompt": "",
                               "sampler_name": "Euler a", "steps": 20, "cfg_scale": 7,
                               "width": 512, "height": 512, "seed": -1,
                               "override_settings": {"enable_pnginfo": False,
                                                     "sd_model_checkpoint":
                                                         "v1-5-pruned.ckpt [e1441589a6]"},
                               "img2img_enabled": False},
    "p5_input": {"enabled": False, "code": ""},
    "upscaler_input": {"enabled": False, "upscaler_1": "None", "upscaling_resize": 2},
})


class ProjectUntitledView(APIView):
    @extend_schema(request=s.ProjectUntitledInputSerializer,
                   responses={200: s.ProjectOutputSerializer},
                   summary='A new project named "New Project" (the Studio\'s new-project call)')
    def post(self, request: Request) -> Response:
        body = s.ProjectUntitledInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = services.project_create_untitled(user=request.user, **body.validated_data)
        # 200, not 201: the existing platform answers this call with 200 and the project
        return Response(s.ProjectOutputSerializer(project).data)


class InstructionSetConvertView(APIView):
    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT},
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT,
                                        description="The v2 GenerationInput, validated.")},
        examples=[_V1_EXAMPLE],
        summary="Convert a v1 instruction set (the body) to a v2 GenerationInput",
        description=(
            "Steps as the existing conversion makes them: `txt2img-comfy` (or `img2img-comfy`), "
            "a `p5` step first when img2img reads an enabled sketch, `upscaler-comfy` last when "
            "the upscaler is on; `{{name}}` placeholders become variable nodes of rich-text "
            "prompts; variables keep `is_feature` and display names. Create a collection with "
            "the result to give its steps component ids."),
    )
    def post(self, request: Request) -> Response:
        return Response(services.instruction_set_convert(data=request.data))


class InstructionSetLinterView(APIView):
    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("level", str, enum=["all", "error", "warn"],
                                     description="Only the rules of this level (default all).")],
        responses={200: s.LintReportOutputSerializer},
        examples=[_V1_EXAMPLE],
        summary="Lint an instruction set (the body; v1, or v2 with `version: \"v2\"`)",
        description=(
            "v1 runs the existing platform's rules (`unused_char_str_var`, `unused_images_var`, "
            "`no_img2img_var`, `no_img2img_const`, `empty_var_value`, `generation_limit`, "
            "`png_info_enabled`, `no_p5_code`, `no_seed_value`) with their messages; v2 runs "
            "`unused_var`, `unconverted_var_placeholder` (a `{{name}}` left in a prompt), "
            "`empty_var_value`, `duplicate_hashes`, `generation_limit` and `no_p5_code`."),
    )
    def post(self, request: Request) -> Response:
        query = s.InstructionSetLintQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = services.instruction_set_lint(data=request.data,
                                               level=query.validated_data["level"])
        return Response(s.LintReportOutputSerializer(report).data)
