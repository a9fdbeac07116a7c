"""The hot job endpoints pin their query counts: they must not grow with the number of jobs,
generations or history rows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from generation_app.services.requests import job_create_from_input, job_input_prepare

DATA = {"version": "v2", "steps": [
    {"id": 1, "nodeName": "prompt", "nodePayload": {"prompt": "a quiet harbour"}},
    {"id": 2, "nodeName": "prompt", "nodePayload": {"prompt": "an etching of #1"}}],
    "generations": {"hashes": [], "generations": 1, "use_custom_hashes": False}, "variables": []}

# API key lookup and its last-use stamp, then the page and its count (list) or the row (detail)
# and what it waits for (one query for its state and place in line, one for the median
# durations: generation_app.selectors.job_wait_info); throttling is in Redis
LIST_QUERIES = 4
DETAIL_QUERIES = 5


def _jobs(user, n: int, *, generations: int = 1) -> list:
    return [job_create_from_input(user=user, collection_id=None, name=f"job {i}",
                                  job_input=job_input_prepare(user=user, data=DATA,
                                                              count=generations))
            for i in range(n)]


@pytest.mark.django_db
@pytest.mark.parametrize("n", [1, 12])
def test_the_job_list_costs_the_same_queries_for_1_or_12_jobs(api_for, make_user, n,
                                                               django_assert_max_num_queries):
    from emprops.accounts.services import user_provision

    user = user_provision(username=f"lister{n}", free_credits=Decimal(1000))
    _jobs(user, n)
    client = api_for(user)

    with django_assert_max_num_queries(LIST_QUERIES):
        response = client.get("/api/jobs")

    assert response.status_code == 200
    assert response.json()["data"]["total"] == n


@pytest.mark.django_db
@pytest.mark.parametrize("generations", [1, 8])
def test_job_detail_costs_the_same_queries_for_1_or_8_generations(
        api_for, generations, django_assert_max_num_queries):
    from emprops.accounts.services import user_provision

    user = user_provision(username=f"viewer{generations}", free_credits=Decimal(1000))
    [job] = _jobs(user, 1, generations=generations)
    client = api_for(user)

    with django_assert_max_num_queries(DETAIL_QUERIES):
        response = client.get(f"/api/jobs/{job.id}")

    assert response.status_code == 200
    assert response.json()["data"]["id"] == str(job.id)
