"""References confined: a reference image may name only the owner's reference locations
(by default the inbox's references/ folder and public https URLs), never the pipeline's own
results, never an internal host; the rule reads the URI only."""

from __future__ import annotations

import json

import pytest

from bananabatch.config import ENV_REFERENCE_LOCATIONS, Settings
from bananabatch.core.intake import AcceptedLine, LineParser, RejectedLine
from bananabatch.core.references import ReferencePolicy, location_problem
from bananabatch.errors import ConfigError
from bananabatch.pipeline.references import reference_policy

DEFAULT = ReferencePolicy.for_buckets("inbox", "results")


@pytest.mark.parametrize(
    "uri",
    [
        "gs://inbox/references/fox.png",
        "gs://inbox/references/a/b/c.webp",
        "https://example.com/fox.png",
        "https://cdn.example.co.uk/x/fox.jpg?X-Goog-Signature=abc",
        "https://example.com:443/fox.png",
        "https://storage.googleapis.com/inbox/references/fox.png",
        "https://inbox.storage.googleapis.com/references/fox.png",
        # A Files API file: the Developer API's own way to pass an image.
        "https://generativelanguage.googleapis.com/v1beta/files/abc-123",
    ],
)
def test_the_default_locations_admit(uri: str) -> None:
    assert DEFAULT.problem(uri) is None


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        # Other schemes.
        ("file:///etc/passwd", "found a file: URI"),
        ("http://example.com/x.png", "found a http: URI"),
        ("ftp://example.com/x.png", "found a ftp: URI"),
        ("data:image/png;base64,AAAA", "found a data: URI"),
        ("HTTPS://example.com/x.png", "gs:// or https://"),
        ("/local/x.png", "found no scheme"),
        # User-info.
        ("https://user:secret@example.com/x.png", "user name or password"),
        ("https://user@example.com/x.png", "user name or password"),
        ("https://@example.com/x.png", "user name or password"),
        # IP literals, in any notation.
        ("https://127.0.0.1/x.png", "IP address"),
        ("https://169.254.169.254/computeMetadata/v1/x.png", "IP address"),
        ("https://10.0.0.8/x.png", "IP address"),
        ("https://[::1]/x.png", "IP address"),
        ("https://[fe80::1]/x.png", "IP address"),
        ("https://2130706433/x.png", "IP address"),
        ("https://0x7f.1/x.png", "IP address"),
        ("https://127.1/x.png", "IP address"),
        # Internal hosts.
        ("https://localhost/x.png", "public DNS host"),
        ("https://api.localhost/x.png", "public DNS host"),
        ("https://metadata.google.internal/x.png", "public DNS host"),
        ("https://metadata/x.png", "public DNS host"),
        ("https://db.corp.internal/x.png", "public DNS host"),
        ("https://printer.local/x.png", "public DNS host"),
        ("https://example.com./x.png", None),  # trailing dot: the same public host
        # Google API hosts other than Cloud Storage by object path: the Files API and
        # Vertex hold other jobs' files; the JSON API names any bucket.
        ("https://generativelanguage.googleapis.com/v1beta/models/x.png", "Google API host"),
        ("https://generativelanguage.googleapis.com/v1beta/files/a/../../x", '".."'),
        ("https://us-central1-aiplatform.googleapis.com/v1/x.png", "Google API host"),
        (
            "https://www.googleapis.com/download/storage/v1/b/results/o/jobs%2Fo%2Fk.png",
            "Google API host",
        ),
        ("https://googleapis.com/x.png", "Google API host"),
        # Ports.
        ("https://example.com:8443/x.png", "port"),
        # Buckets outside the locations, and the pipeline's own results.
        ("gs://elsewhere/x.png", "expected a URI under gs://inbox/references/"),
        ("gs://inbox/x.png", "expected a URI under gs://inbox/references/"),
        ("gs://inbox/references-old/x.png", "expected a URI under"),
        ("gs://results/jobs/other-0123456789ab/images/k.png", "pipeline's own results"),
        ("https://storage.googleapis.com/results/jobs/o/images/k.png", "pipeline's own results"),
        ("https://results.storage.googleapis.com/jobs/o/images/k.png", "pipeline's own results"),
        ("https://storage.googleapis.com/elsewhere/x.png", "expected a URI under"),
        # Dot segments, plain or encoded.
        ("gs://inbox/references/../jobs/x.png", '".."'),
        ("https://example.com/a/%2e%2e/x.png", '".."'),
        ("gs://inbox-only", "gs://BUCKET/OBJECT"),
    ],
)
def test_each_refused_form_is_refused_with_its_reason(uri: str, fragment: str | None) -> None:
    problem = DEFAULT.problem(uri)
    if fragment is None:
        assert problem is None
        return
    assert problem is not None, uri
    assert fragment in problem


def test_the_results_bucket_is_never_a_reference_even_when_listed() -> None:
    policy = ReferencePolicy.for_buckets("inbox", "results", ["gs://results/"])
    assert policy.problem("gs://results/shared/fox.png") is None
    assert "pipeline's own results" in str(policy.problem("gs://results/jobs/j/images/k.png"))


def test_listed_https_prefixes_confine_https_too() -> None:
    policy = ReferencePolicy.for_buckets(
        "inbox", "results", ["gs://brand-assets/refs/", "https://cdn.example.com/refs/"]
    )
    assert policy.problem("gs://brand-assets/refs/logo.png") is None
    assert policy.problem("https://cdn.example.com/refs/logo.png") is None
    assert policy.problem("gs://inbox/references/logo.png") is not None
    problem = policy.problem("https://other.example.com/logo.png")
    assert problem is not None
    assert "gs://brand-assets/refs/ or https://cdn.example.com/refs/" in problem


def test_the_locations_come_from_the_settings() -> None:
    settings = Settings.from_env(
        {
            "BANANABATCH_INBOX_BUCKET": "in",
            "BANANABATCH_RESULTS_BUCKET": "out",
            ENV_REFERENCE_LOCATIONS: "gs://assets/refs/, https://",
        }
    )
    assert settings.reference_locations == ("gs://assets/refs/", "https://")
    assert Settings.from_env(settings.to_env()) == settings
    policy = reference_policy(settings)
    assert policy.problem("gs://assets/refs/x.png") is None
    assert policy.problem("gs://in/references/x.png") is not None
    default = reference_policy(Settings(inbox_bucket="in", results_bucket="out"))
    assert default.locations == ("gs://in/references/", "https://")
    assert default.results_bucket == "out"


# A bucket or host without its closing slash would be a prefix of others: gs://inbox would
# admit gs://inbox-of-someone-else/..., https://cdn.example.com https://cdn.example.com.evil/.
@pytest.mark.parametrize(
    "location", ["s3://bucket/", "gs://", "gs://assets", "https://host-without-slash", "x"]
)
def test_a_malformed_location_is_a_configuration_error(location: str) -> None:
    assert location_problem(location) is not None
    with pytest.raises(ConfigError, match="reference location"):
        Settings.from_env({ENV_REFERENCE_LOCATIONS: location})


def test_the_parser_holds_reference_images_to_the_policy() -> None:
    parser = LineParser(default_model="gemini-3.1-flash-image", references=DEFAULT)
    ok = parser.parse(
        1, json.dumps({"prompt": "x", "reference_images": ["gs://inbox/references/a.png"]}).encode()
    )
    assert isinstance(ok, AcceptedLine)
    bad = parser.parse(
        2,
        json.dumps(
            {
                "prompt": "x",
                "reference_images": [
                    "gs://inbox/references/a.png",
                    "gs://results/jobs/j/images/k.png",
                ],
            }
        ).encode(),
    )
    assert isinstance(bad, RejectedLine)
    assert bad.field == "reference_images"
    assert bad.reason.startswith('line 2, field "reference_images": item 2: must not name')
