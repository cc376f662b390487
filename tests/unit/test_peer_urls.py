import pytest

from orchestrator.errors import BadRequest
from orchestrator.federation.cluster import check_peer_url


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://host:99999", "ftp://host:2380", "http://host", 42, "http://u@host:2380"]
)
def test_bad_peer_urls_are_400(url: object) -> None:
    with pytest.raises(BadRequest):
        check_peer_url(url)


def test_good_peer_url() -> None:
    assert check_peer_url("http://10.0.0.5:2380") == "http://10.0.0.5:2380"
