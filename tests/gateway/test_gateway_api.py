"""The gateway's HTTP API against a real gateway process, on each transport: jobs are
submitted, read for the whole root with results as `asya results --json` prints them,
and bad input gets a JSON error naming the field."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from tests.gateway.conftest import Served


def test_a_fanned_out_job_succeeds_with_every_piece_in_its_results(
        served: Served, api: httpx.Client) -> None:
    # Given a job whose text splits into two sentences
    created = api.post("/v1/jobs", json={"payload": {"text": "One. Two."}})
    assert created.status_code == 201
    job = created.json()["id"]
    assert created.json()["status"] == "queued"
    # When both pieces have ended
    served.wait_ended([job])
    body = api.get(f"/v1/jobs/{job}").json()
    # Then the job succeeded, and its results are the records `asya results --json` prints
    assert body["id"] == job and body["status"] == "succeeded"
    expected = sorted((r.to_json() for r in served.mesh.children(job)), key=lambda r: r["id"])
    assert sorted(body["results"], key=lambda r: r["id"]) == expected
    assert {r["payload"]["shout"] for r in body["results"]} == {"ONE.", "TWO."}
    assert all(r["route"]["prev"] == ["split", "shout"] for r in body["results"])


def test_a_route_of_the_request_replaces_the_mesh_default(
        served: Served, api: httpx.Client) -> None:
    job = api.post("/v1/jobs", json={"payload": {"text": "hi"}, "route": ["shout"]}).json()["id"]
    served.wait_ended([job])
    [record] = api.get(f"/v1/jobs/{job}").json()["results"]
    assert record["route"]["prev"] == ["shout"] and record["payload"]["shout"] == "HI"


def test_a_job_that_fails_reports_failed_with_the_reason(
        served: Served, api: httpx.Client) -> None:
    job = api.post("/v1/jobs", json={"payload": {"x": 1}, "route": ["boom"]}).json()["id"]
    served.wait_ended([job])
    body = api.get(f"/v1/jobs/{job}").json()
    assert body["status"] == "failed"
    assert body["results"][0]["error"]["type"].endswith("ValueError")
    assert body["results"][0]["error"]["reason"] == "handler-error"


def test_an_idempotency_key_returns_the_same_job_and_refuses_another_body(
        served: Served, api: httpx.Client) -> None:
    # Given a job submitted with a key
    first = api.post("/v1/jobs", json={"payload": {"text": "a"}, "route": ["shout"]},
                     headers={"Idempotency-Key": "order-17"})
    # When the same request comes again, and then the key with another body
    again = api.post("/v1/jobs", json={"payload": {"text": "a"}, "route": ["shout"]},
                     headers={"Idempotency-Key": "order-17"})
    other = api.post("/v1/jobs", json={"payload": {"text": "b"}, "route": ["shout"]},
                     headers={"Idempotency-Key": "order-17"})
    # Then the repeat is the same job (200), the reuse is refused naming the header
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "Idempotency-Key"
    served.wait_ended([first.json()["id"]])
    # and only one envelope ran
    assert len(served.mesh.children(first.json()["id"])) == 1


def test_bad_input_gets_a_json_error_naming_the_field(served: Served,
                                                      api: httpx.Client) -> None:
    cases = [
        ({"route": ["shout"]}, 422, "payload"),                       # no payload
        ({"payload": [1, 2]}, 422, "payload"),                        # not an object
        ({"payload": {}, "extra": 1}, 422, "extra"),                  # unknown field
        ({"payload": {}, "route": []}, 422, "route"),                 # empty route
        ({"payload": {}, "route": ["shout", "nobody"]}, 422, "route"),  # unknown actor
        ({"payload": {"blob": "x" * 300_000}}, 413, "payload"),       # past the limit
    ]
    for body, status, field in cases:
        answer = api.post("/v1/jobs", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["field"] == field, answer.json()
    unknown_actor = api.post("/v1/jobs", json={"payload": {}, "route": ["nobody"]})
    assert "nobody" in unknown_actor.json()["error"]["message"]
    missing = api.get("/v1/jobs/no-such-job")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "id"


def test_no_key_or_a_wrong_key_gets_401_and_public_paths_need_none(served: Served) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"},
                    {"Authorization": "Basic dGVzdA=="}):
        answer = httpx.post(served.url + "/v1/jobs", json={"payload": {}}, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"]["field"] == "Authorization"
    assert httpx.post(served.url + "/mcp", json={}).status_code == 401
    assert httpx.post(served.url + "/a2a", json={}).status_code == 401
    assert httpx.get(served.url + "/healthz").json() == {"status": "ok", "mesh": "desk"}
    paths = httpx.get(served.url + "/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/a2a"} <= set(paths)


def test_a_second_client_key_is_a_client_of_its_own(served: Served) -> None:
    # The Idempotency-Key belongs to the client: another client's same key is its own job
    body = {"payload": {"text": "c"}, "route": ["shout"]}
    mine = httpx.post(served.url + "/v1/jobs", json=body, headers={
        **served.headers, "Idempotency-Key": "k1"}).json()["id"]
    theirs = httpx.post(served.url + "/v1/jobs", json=body, headers={
        "Authorization": "Bearer another-key-0123456789abcdef", "Idempotency-Key": "k1"})
    assert theirs.status_code == 201 and theirs.json()["id"] != mine
    served.wait_ended([mine, theirs.json()["id"]])


def test_metrics_count_the_requests_and_the_jobs(served: Served, api: httpx.Client) -> None:
    api.post("/v1/jobs", json={"payload": {"text": "m"}, "route": ["shout"]})
    text = httpx.get(served.url + "/metrics").text
    assert 'asya_gateway_requests_total{code="201",mesh="desk",method="POST",route="/v1/jobs"}' \
        in text
    assert 'asya_gateway_jobs_submitted_total{client="tester",mesh="desk",protocol="http"}' \
        in text


def test_a_body_sent_as_curl_d_sends_it_is_read_as_json(served: Served) -> None:
    # Given a body posted the way `curl -d` posts it (Content-Type: a form)
    form = {**served.headers, "Content-Type": "application/x-www-form-urlencoded"}
    answer = httpx.post(served.url + "/v1/jobs", headers=form,
                        content=b'{"payload": {"text": "hi"}, "route": ["shout"]}')
    # Then it is a job all the same
    assert answer.status_code == 201, answer.text
    served.wait_ended([answer.json()["id"]])
    # and a body that is no JSON at all is refused naming the body
    broken = httpx.post(served.url + "/v1/jobs", headers=form, content=b'{"payload": ')
    assert broken.status_code == 422
    assert broken.json()["error"]["field"] == "body"
    assert "Invalid JSON" in broken.json()["error"]["message"]


def test_headers_are_named_as_sent_and_unknown_paths_get_the_same_json(
        served: Served, api: httpx.Client) -> None:
    long_key = api.post("/v1/jobs", json={"payload": {}},
                        headers={"Idempotency-Key": "k" * 201})
    assert long_key.status_code == 422
    assert long_key.json()["error"]["field"] == "Idempotency-Key"
    for method, path, status in (("GET", "/v1/nothing", 404), ("DELETE", "/v1/jobs", 405)):
        answer = api.request(method, path)
        assert answer.status_code == status
        assert answer.json()["error"]["status"] == status, answer.text


def test_the_openapi_document_describes_the_body_the_errors_and_the_key(
        served: Served) -> None:
    doc = httpx.get(served.url + "/openapi.json").json()
    submit = doc["paths"]["/v1/jobs"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["payload"] and body["additionalProperties"] is False
    # the errors answer the gateway's JSON, not FastAPI's default
    error = {"$ref": "#/components/schemas/ErrorAnswer"}
    for code in ("401", "409", "413", "422"):
        assert submit["responses"][code]["content"]["application/json"]["schema"] == error
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert submit["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_a_chunked_body_past_the_limit_is_refused_while_it_streams(
        served: Served, api: httpx.Client) -> None:
    # Given a body with no Content-Length (chunked), far past the limit
    def chunks() -> Iterator[bytes]:
        yield b'{"payload": {"blob": "'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}}'

    # When it is posted
    answer = api.post("/v1/jobs", content=chunks())
    # Then it is refused naming the payload
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["field"] == "payload"
    assert "over the gateway's limit" in answer.json()["error"]["message"]
