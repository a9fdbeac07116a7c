"""Reads for the gallery pages. Every read of a collection's outputs takes the viewer (its owner)
or goes through the public collection list; other users' collections are NotFound.

A collection's outputs are its owner's completed generations of jobs started from it (the job's
`data.collectionId`): generations are made only from one's own collections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from django.db.models import Case, Q, QuerySet, When
from django.db.models.fields.json import KeyTextTransform

from collections_app import selectors as collection_selectors
from collections_app.models import Collection, CollectionPreview
from emprops.api import get_or_not_found
from generation_app.models import Generation
from generation_app.selectors import WaitInfo, job_wait_info
from jobs_app.models import Job

GRID_SIZE = 48  # the newest outputs a collection page shows
CARDS = 24  # collections per list on the landing page
LIVE_JOBS = 3  # unfinished jobs a collection page follows

# Active documents (a `js` step's page, SVG): only ever in a sandboxed frame on the user-content
# origin, where their scripts run in an opaque origin and reach nothing of ours.
DOCUMENT_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml")


def safe_url(url: Any) -> str | None:
    """Only http(s) and same-site paths become a src or href (never `javascript:` or `data:`)."""
    if not isinstance(url, str) or not url:
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https") or (not scheme and url.startswith("/")
                                       and not url.startswith("//")):
        return url
    return None


def output_kind(mime: Any) -> str:
    mime = mime.lower() if isinstance(mime, str) else ""
    if mime in DOCUMENT_TYPES:
        return "document"
    if mime.startswith("image/"):
        return "image"
    if mime.startswith("video/"):
        return "video"
    if mime.startswith("text/"):
        return "text"
    return "link"


@dataclass(frozen=True)
class StepOutput:
    step_id: Any
    label: str
    mime: str
    kind: str
    src: str | None
    text: str | None


@dataclass(frozen=True)
class GalleryItem:
    job_id: UUID
    gid: int
    hash: str
    status: str
    variables: list[tuple[str, str]]
    steps: list[StepOutput]
    error: str | None = None

    @property
    def image(self) -> str | None:
        return next((s.src for s in self.steps if s.kind == "image" and s.src), None)


@dataclass(frozen=True)
class LiveJob:
    job: Job
    waiting: WaitInfo
    items: list[GalleryItem] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.job.status in Job.FINISHED


@dataclass(frozen=True)
class Card:
    collection: Collection
    image: str | None


def _steps(outputs: Any) -> list[StepOutput]:
    steps = outputs.get("steps") if isinstance(outputs, dict) else None
    result = []
    for step in steps if isinstance(steps, list) else []:
        response = step.get("nodeResponse") if isinstance(step, dict) else None
        if not isinstance(response, dict):
            continue
        mime = response.get("mimeType")
        mime = mime if isinstance(mime, str) else ""
        text = response.get("data")
        result.append(StepOutput(
            step_id=step.get("id"), label=str(step.get("nodeAlias") or step.get("nodeName") or ""),
            mime=mime, kind=output_kind(mime), src=safe_url(response.get("src")),
            text=text if isinstance(text, str) else None))
    return result


def _item(gen: Generation) -> GalleryItem:
    variables = gen.variables if isinstance(gen.variables, dict) else {}
    return GalleryItem(job_id=gen.job_id, gid=gen.gid, hash=gen.hash, status=gen.status,
                       variables=[(str(k), str(v)) for k, v in variables.items()],
                       steps=_steps(gen.outputs) if gen.status == Generation.Status.COMPLETED
                       else [], error=gen.error)


def _of_collection(collection: Collection) -> Q:
    return Q(job__user_id=collection.project.user_id, job__data__collectionId=str(collection.id))


def collection_items(*, collection: Collection) -> list[GalleryItem]:
    """The newest completed generations of a collection (callers have checked the viewer)."""
    gens = (Generation.objects.filter(_of_collection(collection),
                                      status=Generation.Status.COMPLETED)
            .order_by("-completed_at", "-id")[:GRID_SIZE])
    return [_item(g) for g in gens]


def collection_get(*, viewer_id: Any, collection_id: UUID | str) -> Collection:
    """The viewer's collection, or NotFound."""
    return collection_selectors.collection_get(user=viewer_id, collection_id=collection_id)


def collection_job_get(*, collection: Collection, job_id: UUID | str) -> Job:
    """A job of the collection's owner started from this collection, or NotFound."""
    return get_or_not_found(Job.objects.filter(user_id=collection.project.user_id,
                                               data__collectionId=str(collection.id)),
                            label="Job", pk=job_id)


def collection_live_jobs(*, collection: Collection,
                         also: UUID | str | None = None) -> list[LiveJob]:
    """The collection's unfinished jobs (newest first, at most LIVE_JOBS) and `also` (a job
    just started from the page, finished or not), each with its generations and wait info."""
    mine = Q(user_id=collection.project.user_id, data__collectionId=str(collection.id))
    unfinished = Q(status__in=[s for s in Job.Status if s not in Job.FINISHED])
    wanted = unfinished
    order: list[Any] = ["-created_at"]
    if also is not None:  # the job asked for first, then the others
        wanted = unfinished | Q(pk=also)
        order = [Case(When(pk=also, then=0), default=1), "-created_at"]
    jobs = list(Job.objects.filter(mine & wanted).order_by(*order)[:LIVE_JOBS])
    by_job: dict[Any, list[GalleryItem]] = {j.pk: [] for j in jobs}
    for gen in Generation.objects.filter(job__in=jobs).order_by("job", "gid"):
        by_job[gen.job_id].append(_item(gen))
    return [LiveJob(job=j, waiting=job_wait_info(j), items=by_job[j.pk]) for j in jobs]


def _covers(collections: list[Collection], *, outputs_of: set[UUID]) -> dict[str, str]:
    """The first image of the newest completed generation of each collection in `outputs_of`
    (one query)."""
    wanted = [c for c in collections if c.pk in outputs_of and not safe_url(c.cover_image_url)]
    if not wanted:
        return {}
    match = Q()
    for c in wanted:
        match |= _of_collection(c)
    rows = (Generation.objects.filter(match, status=Generation.Status.COMPLETED)
            .annotate(cid=KeyTextTransform("collectionId", "job__data"))
            .order_by("cid", "-completed_at").distinct("cid").values_list("cid", "outputs"))
    covers = {}
    for cid, outputs in rows:
        image = next((s.src for s in _steps(outputs) if s.kind == "image" and s.src), None)
        if image:
            covers[cid] = image
    return covers


def _cards(collections: list[Collection], *, outputs_of: set[UUID]) -> list[Card]:
    covers = _covers(collections, outputs_of=outputs_of)
    return [Card(collection=c, image=safe_url(c.cover_image_url) or covers.get(str(c.pk)))
            for c in collections]


def _public() -> QuerySet[Collection]:
    return collection_selectors.collection_public_list()


def home_cards(*, viewer: Any) -> tuple[list[Card], list[Card]]:
    """The viewer's newest collections (none when signed out) and the newest public ones.
    A public card shows an output only when the collection's preview is PUBLIC."""
    mine = list(collection_selectors.collection_list(user=viewer)[:CARDS]) \
        if viewer is not None else []
    public = list(_public()[:CARDS])
    shown = set(CollectionPreview.objects.filter(
        collection__in=public, access_level=CollectionPreview.AccessLevel.PUBLIC)
        .values_list("collection_id", flat=True))
    return (_cards(mine, outputs_of={c.pk for c in mine}),
            _cards(public, outputs_of=shown))


@dataclass(frozen=True)
class PublicPage:
    collection: Collection
    outputs_public: bool
    items: list[GalleryItem]


def public_page(*, collection_id: UUID | str) -> PublicPage:
    """A published collection, and its outputs when its preview is PUBLIC; NotFound for drafts,
    archived and missing collections."""
    collection = get_or_not_found(_public(), label="Collection", pk=collection_id)
    outputs_public = CollectionPreview.objects.filter(
        collection=collection, access_level=CollectionPreview.AccessLevel.PUBLIC).exists()
    items = collection_items(collection=collection) if outputs_public else []
    return PublicPage(collection=collection, outputs_public=outputs_public, items=items)
