"""`GET /api/jobs/{id}/events`: the live Server-Sent Events stream of a job (SPEC section 6).

A thin async view rather than django-eventstream: the stream must authenticate like the API
(header or signed token) and answer an enveloped 404 before streaming, send a per-job snapshot
(`job_update` + `history_init`), number events per job so `Last-Event-ID` replays exactly the
missed ones from the event rows, and hold no database connection while it waits. It keeps
django-eventstream's contract: events are rows (storage) and are published through Redis on
commit, so every web process delivers what any worker wrote.

The stream ends with the job: once the job row is finished and every event up to its
`event_seq` has been sent (read together, in one snapshot), the response closes. EventSource then
reconnects with the last id and gets `204 No Content`, which tells it to stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.db import close_old_connections, connection, transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from emprops.middleware import envelope_error
from jobs_app.models import Job, JobEvent, JobHistory
from jobs_app.selectors import job_events_after
from jobs_app.services import events_channel, history_row_data, job_snapshot

logger = logging.getLogger(__name__)
EVENTS_TOKEN_SALT = "emprops.job-events"
EVENTS_TOKEN_MAX_AGE = 300


def _format(seq: int, event: str, data: Any) -> bytes:
    return f"id: {seq}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


class _Denied(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        self.status, self.message, self.retry_after = status, message, retry_after


def _viewer_id(request: HttpRequest, job_id: UUID) -> Any:
    token = request.GET.get("token")
    if token:
        try:
            claims = signing.loads(token, salt=EVENTS_TOKEN_SALT, max_age=EVENTS_TOKEN_MAX_AGE)
        except signing.BadSignature:
            raise _Denied(401, "Invalid or expired events token.") from None
        if claims.get("j") != str(job_id):
            raise _Denied(401, "This token is for another job.")
        return claims["u"]
    from emprops.authentication import ApiAuthentication

    try:
        result = ApiAuthentication().authenticate(Request(request))
    except Throttled as exc:  # too many failed credential checks from this address
        wait_s = getattr(exc, "wait", None)
        wait = int(wait_s + 0.999) if wait_s is not None else None
        raise _Denied(429, str(exc.detail), retry_after=max(1, wait or 1)) from None
    except AuthenticationFailed as exc:
        raise _Denied(401, str(exc.detail)) from None
    if result is None:
        raise _Denied(401, "Authentication credentials were not provided.")
    return result[0].pk


def _terminal(event_type: str, data: Any) -> bool:
    """A `job_update` that says the job finished: the cue to check whether the stream is done
    (the job row decides: a retry may have started it again since)."""
    return event_type == "job_update" and isinstance(data, dict) \
        and data.get("status") in Job.FINISHED


def _repeatable_read() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def _open(request: HttpRequest, job_id: UUID,
          last_event_id: str | None) -> tuple[list[bytes], int, bool]:
    """Authenticate, check the job is the viewer's, and build the first frames, the last sequence
    number they cover and whether the job is finished (then the frames are all there is; none
    means the client has everything). Closes the database connection before returning, so the
    waiting stream holds none."""
    try:
        user_id = _viewer_id(request, job_id)
        # one snapshot: the job's sequence number and the rows read with it agree, so a row that
        # commits meanwhile arrives once, live, and not also inside history_init
        with transaction.atomic():
            _repeatable_read()
            job = Job.objects.filter(pk=job_id, user_id=user_id).first()
            if job is None:
                raise _Denied(404, "Job not found.")
            last_seq = job.event_seq
            finished = job.status in Job.FINISHED
            frames: list[bytes] = []
            replay_from = _parse_seq(last_event_id)
            if finished and replay_from is not None and replay_from >= last_seq:
                return [], last_seq, True  # at or past the final event: nothing more will come
            if replay_from is not None and replay_from <= last_seq:
                for ev in job_events_after(job_id=job.pk, seq=replay_from):
                    frames.append(_format(ev.seq, ev.event_type, ev.data))
            else:
                frames.append(_format(last_seq, "job_update", job_snapshot(job)))
                rows = [history_row_data(r) for r in JobHistory.objects.filter(job=job)
                        .order_by("created_at", "id")]
                frames.append(_format(last_seq, "history_init", rows))
        return frames, last_seq, finished
    finally:
        connection.close()


def _missed(job_id: UUID, after: int) -> tuple[list[JobEvent], bool]:
    """The events after `after` and whether they finish the stream: the job is finished (or
    gone) in the same snapshot, so they run up to its final event."""
    try:
        with transaction.atomic():
            _repeatable_read()
            status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
            return job_events_after(job_id=job_id, seq=after), status in (None, *Job.FINISHED)
    finally:
        connection.close()


def _parse_seq(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


async def job_events(request: HttpRequest, job_id: UUID) -> HttpResponse | StreamingHttpResponse:
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
    await sync_to_async(close_old_connections)()
    redis = aioredis.Redis.from_url(settings.EVENTS_REDIS_URL)
    pubsub = redis.pubsub()
    # subscribe before reading the rows, so nothing committed in between is missed
    try:
        await pubsub.subscribe(events_channel(job_id))
    except (aioredis.RedisError, OSError):
        # Redis down or swamped (a thousand streams connecting at once): EventSource clients
        # retry after Retry-After; nothing is lost, a reconnect replays from Last-Event-ID
        await pubsub.aclose()
        await redis.aclose()
        logger.warning("event stream of job %s refused: events Redis unreachable", job_id)
        busy = envelope_error("The event stream is unavailable; retry shortly.", 503,
                              request=request)
        busy["Retry-After"] = "2"
        return busy
    try:
        frames, last_seq, finished = await sync_to_async(_open)(request, job_id, last_event_id)
    except _Denied as exc:
        await pubsub.aclose()
        await redis.aclose()
        denied = envelope_error(exc.message, exc.status, request=request)
        if exc.status == 401:
            denied["WWW-Authenticate"] = 'Bearer realm="api"'
        if exc.retry_after is not None:
            denied["Retry-After"] = str(exc.retry_after)
        return denied
    except BaseException:
        await pubsub.aclose()
        await redis.aclose()
        raise
    if finished and not frames:
        await pubsub.aclose()
        await redis.aclose()
        return HttpResponse(status=204)
    response = StreamingHttpResponse(_stream(job_id, frames, last_seq, finished, redis, pubsub),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _stream(job_id: UUID, frames: list[bytes], last_seq: int, finished: bool,
                  redis: aioredis.Redis, pubsub: Any) -> AsyncIterator[bytes]:
    heartbeat = settings.EVENTS_HEARTBEAT_SECONDS
    try:
        yield b"retry: 2000\n\n"
        for frame in frames:
            yield frame
        if frames and frames[-1]:
            last_seq = max(last_seq, _last_id(frames))
        if finished:  # the frames were read with the finished job row: they end with its last event
            return
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=heartbeat)
            catch_up = False
            if message is None:
                # a quiet spell: catch up on an event whose publish was lost after its commit
                # (a worker killed between the two), so the stream does not wait for the next one
                catch_up = True
            else:
                try:
                    event = json.loads(message["data"])
                except (TypeError, ValueError):
                    continue
                seq = int(event["seq"])
                if seq <= last_seq:
                    continue
                if seq == last_seq + 1:
                    yield _format(seq, event["event"], event["data"])
                    last_seq = seq
                    # the finished status may be the last event: confirm against the rows now
                    # rather than after a heartbeat, and close when nothing is left
                    catch_up = _terminal(event["event"], event["data"])
                else:  # a publish was lost or arrived out of order: read the rows
                    catch_up = True
            if catch_up:
                rows, done = await sync_to_async(_missed)(job_id, last_seq)
                for ev in rows:
                    yield _format(ev.seq, ev.event_type, ev.data)
                    last_seq = ev.seq
                if done:
                    return
                if message is None:
                    yield b": keep-alive\n\n"
    except asyncio.CancelledError:  # the client went away
        raise
    finally:
        await pubsub.aclose()
        await redis.aclose()


def _last_id(frames: list[bytes]) -> int:
    first_line = frames[-1].split(b"\n", 1)[0]
    return int(first_line.removeprefix(b"id: ") or 0)
