"""S3 storage end to end against a real S3-compatible server on loopback (moto's server mode)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image

from collections_app.models import FlatFile
from emprops import storage
from jobs_app.models import Job
from tests.workers import wait_for

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def body(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def worker_env(self, **extra: str) -> dict[str, str]:
        """The environment that selects this bucket in a fresh process (as in production)."""
        return {
            "AWS_STORAGE_BUCKET_NAME": self.bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_S3_REGION_NAME": REGION,
            **CREDENTIALS,
            **extra,
        }


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket, and Django's default storage pointed at it for this test."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # a developer's ~/.aws must not leak real credentials or settings into the test
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    bucket = f"emprops-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    client.create_bucket(Bucket=bucket)

    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.AWS_S3_ENDPOINT_URL = moto_endpoint
    settings.AWS_S3_REGION_NAME = REGION
    settings.AWS_QUERYSTRING_AUTH = False
    settings.CDN_URL = ""
    # last: changing STORAGES emits setting_changed, which drops the cached default_storage
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"file_overwrite": True},
        },
    }
    return S3(endpoint=moto_endpoint, bucket=bucket, client=client)


def test_default_storage_is_the_bucket(s3: S3) -> None:
    from django.core.files.storage import default_storage
    from storages.backends.s3 import S3Storage

    assert isinstance(default_storage, S3Storage)
    assert default_storage.bucket_name == s3.bucket


def test_save_overwrite_twice_leaves_one_object_with_the_second_content(s3: S3) -> None:
    key = "generations/7/job/0/1/p5.png"

    first = storage.save_overwrite(key, b"first")
    second = storage.save_overwrite(key, b"second")

    assert first == second == key
    assert s3.keys("generations/") == [key]  # no renamed duplicate such as p5_AbC12.png
    assert s3.body(key) == b"second"
    assert storage.read(key) == b"second"


def test_read_returns_the_stored_bytes(s3: S3) -> None:
    key = "generations/7/job/0/2/prompt.txt"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"portrait of a cat")

    assert storage.read(key) == b"portrait of a cat"


def test_public_url_without_cdn_is_the_plain_s3_url(s3: S3) -> None:
    key = "generations/7/job/0/1/p5.png"

    url = storage.public_url(key)

    assert url == f"{s3.endpoint}/{s3.bucket}/{key}"  # no query-string auth when it is off
    assert storage.key_for_url(url) == key
    assert storage.key_for_url(f"{s3.endpoint}/other-bucket/{key}") is None


def test_public_url_with_cdn_is_cdn_plus_key(s3: S3, settings: Any) -> None:
    settings.CDN_URL = "https://cdn.emprops.test/"
    key = "generations/7/job/0/1/p5.png"

    url = storage.public_url(key)

    assert url == "https://cdn.emprops.test/" + key
    assert storage.key_for_url(url) == key
    # the storage's own URL still maps back (rows written before the CDN was configured)
    assert storage.key_for_url(f"{s3.endpoint}/{s3.bucket}/{key}") == key


def test_signed_urls_map_back_to_their_key(s3: S3, settings: Any) -> None:
    settings.AWS_QUERYSTRING_AUTH = True
    settings.STORAGES = {**settings.STORAGES}  # rebuild the storage with the new setting
    key = "generations/7/job/0/1/p5.png"

    url = storage.public_url(key)

    assert url.startswith(f"{s3.endpoint}/{s3.bucket}/{key}?")
    assert "Signature" in url
    assert storage.key_for_url(url) == key


RED = "function setup(){createCanvas(16,16); noLoop()} function draw(){background(255,0,0)}"
COPY = """
let img;
function preload(){ img = loadImage(getComponentOutput('Red')); }
function setup(){ createCanvas(16,16); noLoop(); }
function draw(){ background(0); image(img, 0, 0); }
"""


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.timeout(180)
@pytest.mark.parametrize("cdn", ["https://cdn.emprops.test/", ""], ids=["cdn", "s3-url"])
def test_a_worker_generates_into_s3_and_a_sketch_reads_an_upstream_output_from_it(
    cdn: str, s3: S3, settings: Any, api_for: Any, alice: Any, start_worker: Any
) -> None:
    settings.CDN_URL = cdn
    worker = start_worker(env=s3.worker_env(CDN_URL=cdn))
    client = api_for(alice)
    steps = [
        {
            "id": 1,
            "nodeName": "prompt",
            "alias": "Subject",
            "nodePayload": {"prompt": "a red square"},
        },
        {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "portrait of #1"}},
        {"id": 3, "nodeName": "p5", "alias": "Red", "nodePayload": {"code": RED}},
        {"id": 4, "nodeName": "p5", "alias": "Copy", "nodePayload": {"code": COPY}},
    ]
    response = client.post(
        "/api/projects/collections",
        {"title": "S3", "data": {"steps": steps, "variables": []}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    ids = [s["id"] for s in response.json()["data"]["data"]["steps"]]

    job_id = client.post(
        f"/api/collections/{response.json()['data']['id']}/generations",
        {"hashes": ["oo" + "s" * 49]},
        format="json",
    ).json()["data"]["jobId"]
    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(), 150)

    assert job.status == "completed", (job.error_message, worker.output()[-3000:])
    prefix = f"generations/{alice.id}/{job_id}/0/"
    names = ["prompt.txt", "prompt.txt", "p5.png", "p5.png"]
    keys = [f"{prefix}{step_id}/{name}" for step_id, name in zip(ids, names, strict=True)]
    assert s3.keys(f"generations/{alice.id}/") == sorted(keys)
    assert sorted(
        FlatFile.objects.filter(job_id=job_id).values_list("storage_key", flat=True)
    ) == sorted(keys)
    assert s3.body(keys[1]) == b"portrait of a red square"
    outputs = {s["id"]: s["nodeResponse"] for s in job.data["outputs"][0]["steps"]}
    for step_id, key in zip(ids, keys, strict=True):
        expected = (cdn + key) if cdn else f"{s3.endpoint}/{s3.bucket}/{key}"
        assert outputs[step_id]["src"] == storage.public_url(key) == expected
    # the copy is red only if the browser read the upstream image out of the bucket
    copy = Image.open(io.BytesIO(s3.body(keys[3]))).convert("RGB")
    assert copy.getpixel((8, 8)) == (255, 0, 0)
    assert not any((Path(settings.MEDIA_ROOT) / key).exists() for key in keys)
