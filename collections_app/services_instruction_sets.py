"""The Studio's instruction-set calls: a new untitled project, v1 -> v2 conversion, the linter."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from collections_app import generation_input as gi
from collections_app import instruction_sets
from collections_app.models import Project
from emprops.errors import GraphError, ValidationFailed
from workflows_app.selectors import node_form_lookup

UNTITLED_PROJECT_NAME = "New Project"
CONVERSION_NODES = frozenset({instruction_sets.TXT2IMG, instruction_sets.IMG2IMG,
                              instruction_sets.UPSCALER})


def project_create_untitled(*, user: Any, version: str = "v2") -> Project:
    """A project named "New Project", as the Studio's "new project" button makes one."""
    return Project.objects.create(user=user, name=UNTITLED_PROJECT_NAME, version=version)


def instruction_set_convert(*, data: Any) -> dict[str, Any]:
    """The v2 GenerationInput of a v1 instruction set, validated as a collection's data is (the
    installed workflows' forms coerce the payloads); 400 naming the part that cannot convert or
    validate. A conversion node that is not installed here is checked without a form."""
    try:
        converted = instruction_sets.convert_v1_to_v2(data)
    except instruction_sets.InstructionSetError as exc:
        raise ValidationFailed(str(exc), details={exc.path: [str(exc)]}) from None
    limits = gi.Limits(steps=settings.MAX_STEPS_PER_COLLECTION, variables=settings.MAX_VARIABLES,
                       values=settings.MAX_VARIABLE_VALUES)
    names = [s["nodeName"] for s in converted["steps"]]
    installed = node_form_lookup(names=names)

    def node_form(name: str) -> Any:
        form = installed(name)
        return None if form is False and name in CONVERSION_NODES else form

    try:
        gi.check_limits(converted, limits)
        return gi.validate(converted, node_form=node_form)
    except gi.GenerationInputError as exc:
        raise GraphError(f"The converted instruction set does not validate: {exc}",
                         details=exc.details) from None


def instruction_set_lint(*, data: Any, level: str = "all") -> dict[str, Any]:
    """The linter's report (`{status, rules, error}`) of a v1 or v2 instruction set; 400 for a
    body that is not one or an unsupported version."""
    try:
        return instruction_sets.lint_report(data, level=level,
                                            max_generations=settings.DEFAULT_MAX_GENERATIONS)
    except instruction_sets.InstructionSetError as exc:
        raise ValidationFailed(str(exc), details={exc.path: [str(exc)]}) from None
