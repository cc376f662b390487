"""maoctl's federation and lock commands against the documented payloads (issue 4's API contract),
served by a small fake server until the orchestrator's side lands; the lead adds live tests then."""

from __future__ import annotations

import json

from tests.ctl_helpers import maoctl
from tests.fake_api import fake_api

MEMBERS = {
    "instances": [
        {
            "name": "alpha",
            "api_url": "http://10.0.0.1:8080",
            "version": "0.1.0",
            "labels": {"site": "lab"},
            "started_at": "2025-01-01T00:00:00+00:00",
        },
        {
            "name": "beta",
            "api_url": "http://10.0.0.2:8080",
            "version": "0.1.0",
            "labels": {},
            "started_at": "2025-01-02T00:00:00+00:00",
        },
    ],
    "etcd": [
        {
            "id": "8e9e05c52164694d",
            "name": "alpha",
            "peer_urls": ["http://10.0.0.1:2380"],
            "client_urls": ["http://10.0.0.1:2379"],
            "healthy": True,
        },
        {
            "id": "91bc3c398fb3c146",
            "name": "",
            "peer_urls": ["http://10.0.0.3:2380"],
            "client_urls": [],
            "healthy": False,
        },
    ],
}
ADDED = {
    "member": {"id": "91bc3c398fb3c146", "name": "", "peer_urls": ["http://10.0.0.3:2380"]},
    "ETCD_INITIAL_CLUSTER": "alpha=http://10.0.0.1:2380,gamma=http://10.0.0.3:2380",
    "ETCD_INITIAL_CLUSTER_STATE": "existing",
}
LOCKS = [
    {
        "key": "/mao/v1/locks/raw",
        "dataset": "raw",
        "instance": "alpha",
        "purpose": "merge collect",
        "acquired_at": "2025-01-01T00:00:00+00:00",
    }
]


def test_members_tables_and_json() -> None:
    with fake_api({("GET", "/federation/members"): (200, MEMBERS)}) as api:
        human = maoctl(api.url, "federation", "members")
        as_json = maoctl(api.url, "--json", "federation", "members")
    assert human.exit_code == 0, human.output
    for text in (
        "alpha",
        "http://10.0.0.2:8080",
        "site=lab",
        "8e9e05c52164694d",
        "(not started yet)",
        "✓",
        "✗",
    ):
        assert text in human.stdout
    assert json.loads(as_json.stdout) == MEMBERS


def test_add_member_prints_the_value_to_send() -> None:
    with fake_api({("POST", "/federation/etcd-members"): (200, ADDED)}) as api:
        result = maoctl(
            api.url, "federation", "add-member", "--name", "gamma", "--peer-url", "http://10.0.0.3:2380"
        )
        as_json = maoctl(
            api.url,
            "federation",
            "add-member",
            "--name",
            "gamma",
            "--peer_url",
            "http://10.0.0.3:2380",
            "--json",
        )
    assert result.exit_code == 0, result.output
    assert "ETCD_INITIAL_CLUSTER=alpha=http://10.0.0.1:2380,gamma=http://10.0.0.3:2380" in result.stdout
    assert api.requests[0][:3] == (
        "POST",
        "/federation/etcd-members",
        {"name": "gamma", "peer_url": "http://10.0.0.3:2380"},
    )
    assert json.loads(as_json.stdout) == ADDED


def test_add_member_checks_its_flags_before_calling() -> None:
    with fake_api({}) as api:
        bad_url = maoctl(api.url, "federation", "add-member", "--name", "gamma", "--peer-url", "10.0.0.3")
        bad_name = maoctl(
            api.url, "federation", "add-member", "--name", "../x", "--peer-url", "http://10.0.0.3:2380"
        )
    assert bad_url.exit_code == 2 and "not an http(s) URL" in bad_url.stderr
    assert bad_name.exit_code == 2 and "invalid instance name" in bad_name.stderr
    assert api.requests == []


def test_server_refusal_is_its_message() -> None:
    refusal = {"error": "conflict", "message": "gamma is already a member of the etcd cluster"}
    with fake_api({("POST", "/federation/etcd-members"): (409, refusal)}) as api:
        result = maoctl(
            api.url, "federation", "add-member", "--name", "gamma", "--peer-url", "http://10.0.0.3:2380"
        )
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: gamma is already a member of the etcd cluster"


def test_remove_member_confirms() -> None:
    routes = {("DELETE", "/federation/etcd-members/gamma"): (200, {"name": "gamma", "removed": True})}
    with fake_api(routes) as api:
        declined = maoctl(api.url, "federation", "remove-member", "--name", "gamma", input="n\n")
        assert declined.exit_code == 1 and api.requests == []
        confirmed = maoctl(api.url, "federation", "remove-member", "--name", "gamma", input="y\n")
        forced = maoctl(api.url, "federation", "remove-member", "--name", "gamma", "--yes")
    assert confirmed.exit_code == 0 and forced.exit_code == 0
    assert "Removed gamma" in forced.stdout
    assert [r[:2] for r in api.requests] == [("DELETE", "/federation/etcd-members/gamma")] * 2


def test_lock_list() -> None:
    with fake_api({("GET", "/locks"): (200, LOCKS)}) as api:
        human = maoctl(api.url, "lock", "list")
        as_json = maoctl(api.url, "lock", "list", "--json")
    assert human.exit_code == 0 and "merge collect" in human.stdout and "alpha" in human.stdout
    assert json.loads(as_json.stdout) == LOCKS


def test_federation_wide_schedule_sends_scope_and_placement() -> None:
    job = {
        "pipeline": "demo",
        "job_id": "abc123",
        "cron": "0 * * * *",
        "timezone": "UTC",
        "scope": "federation",
        "placement": {"labels": {"site": "lab"}},
    }
    with fake_api({("POST", "/pipeline/run"): (200, job)}) as api:
        result = maoctl(
            api.url,
            "pipeline",
            "run",
            "--name",
            "demo",
            "--cron",
            "0 * * * *",
            "--scope",
            "federation",
            "--label",
            "site=lab",
        )
        missing_cron = maoctl(api.url, "pipeline", "run", "--name", "demo", "--scope", "federation")
        label_alone = maoctl(
            api.url, "pipeline", "run", "--name", "demo", "--cron", "0 * * * *", "--label", "site=lab"
        )
        bad_label = maoctl(
            api.url,
            "pipeline",
            "run",
            "--name",
            "demo",
            "--cron",
            "0 * * * *",
            "--scope",
            "federation",
            "--label",
            "site",
        )
    assert result.exit_code == 0, result.output
    assert api.requests[0][2] == {
        "name": "demo",
        "cron": "0 * * * *",
        "scope": "federation",
        "placement": {"labels": {"site": "lab"}},
    }
    assert "fired by one instance of the federation labelled site=lab" in result.stdout
    assert len(api.requests) == 1
    for refused in (missing_cron, label_alone, bad_label):
        assert refused.exit_code == 2 and "Usage:" in refused.stderr


def test_degraded_instance_shows_its_checks_and_exits_1() -> None:
    degraded = {
        "status": "degraded",
        "instance": "alpha",
        "etcd": "etcd is unreachable at 127.0.0.1:2379",
        "database": "ok",
        "executor": "ok",
    }
    with fake_api({("GET", "/health"): (503, degraded)}) as api:
        human = maoctl(api.url, "instance", "status")
        as_json = maoctl(api.url, "instance", "status", "--json")
    assert (
        human.exit_code == 1
        and "etcd is unreachable at 127.0.0.1:2379" in human.stdout
        and "degraded" in human.stdout
    )
    assert as_json.exit_code == 1 and json.loads(as_json.stdout) == degraded


def test_a_server_that_is_not_mao() -> None:
    with fake_api(
        {("GET", "/registry/tools"): (502, "Bad Gateway"), ("GET", "/registry/datasets"): (200, "not json")}
    ) as api:
        bad_gateway = maoctl(api.url, "tool", "get")
        assert bad_gateway.exit_code == 1
        assert bad_gateway.stderr.strip() == (
            f"Error: GET {api.url}/registry/tools failed with HTTP 502 (no MAO error message: is --url pointing at a MAO orchestrator?)"
        )
        missing = maoctl(api.url, "lock", "list")
        assert missing.exit_code == 1 and missing.stderr.strip() == "Error: no such endpoint: /locks"


TLS_ADDED = {
    "member": {"id": "1a2b", "name": "gamma", "peer_urls": ["https://10.0.0.3:2380"]},
    "ETCD_INITIAL_CLUSTER": "alpha=https://10.0.0.1:2380,gamma=https://10.0.0.3:2380",
    "ETCD_INITIAL_CLUSTER_STATE": "existing",
}


def test_add_member_over_tls_writes_the_join_bundle(tmp_path) -> None:
    import stat

    from cryptography import x509

    from ctl import pki
    from ctl.join_bundle import load_bundle

    ca = pki.create_authority("fed")
    pki.save_authority(ca, tmp_path / "ca")
    bundle_path = tmp_path / "gamma-join.json"
    args = ("federation", "add-member", "--name", "gamma", "--peer-url", "https://10.0.0.3:2380")
    with fake_api({("POST", "/federation/etcd-members"): (200, TLS_ADDED)}) as api:
        no_ca = maoctl(api.url, *args, "--ca-dir", str(tmp_path / "absent"))
        assert no_ca.exit_code == 1 and "no federation CA" in no_ca.stderr
        assert api.requests == []  # nothing changed in etcd for a newcomer that could never start
        nowhere = maoctl(
            api.url, *args, "--ca-dir", str(tmp_path / "ca"), "--bundle", str(tmp_path / "absent" / "b.json")
        )
        assert nowhere.exit_code == 1 and "cannot write the join bundle" in nowhere.stderr
        assert api.requests == []
        result = maoctl(api.url, *args, "--ca-dir", str(tmp_path / "ca"), "--bundle", str(bundle_path))
    assert result.exit_code == 0, result.output
    assert str(bundle_path) in result.stdout and "private keys" in result.stdout
    assert stat.S_IMODE(bundle_path.stat().st_mode) == 0o600
    bundle = load_bundle(bundle_path)
    assert bundle.initial_cluster == TLS_ADDED["ETCD_INITIAL_CLUSTER"] and bundle.name == "gamma"
    assert "ca.key" not in bundle_path.read_text() and ca.cert_pem.decode() == bundle.ca_cert
    certs = bundle.certificates
    x509.load_pem_x509_certificate(certs.etcd.cert).verify_directly_issued_by(ca.cert)
    assert "10.0.0.3" in pki.certificate_names(certs.etcd.cert)[0]
    # The CA's private key is nowhere in the bundle.
    assert (tmp_path / "ca" / "ca.key").read_text().strip() not in bundle_path.read_text()
