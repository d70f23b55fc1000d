"""`bananabatch fetch JOB --zip FILE` (issue 17 part 5): a job's results as one zip, opened
anywhere as a folder: images, reports, costs and the gallery, which renders from it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from bananabatch import cli
from bananabatch.report.thumbs import make_thumbnail
from tests.e2e.test_cli import EXAMPLES, as_json, invoke, local_env  # noqa: F401  (fixture)
from tests.e2e.test_cli import emulator as emulator

REPORTS = {
    "index.html",
    "results.jsonl",
    "summary.json",
    "costs.csv",
    "rejected.jsonl",
    "failed.jsonl",
}


def _run_examples(root: Path) -> str:
    result = invoke("local", "run", str(EXAMPLES), "--yes", "--root", str(root), "--json")
    assert result.exit_code == cli.EXIT_PARTIAL, result.output
    job_id: str = as_json(result)["job_id"]
    return job_id


def test_fetch_zip_holds_the_images_reports_and_gallery_of_a_job(
    local_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    job_id = _run_examples(local_env)
    job_dir = local_env / "buckets" / "results" / "jobs" / job_id
    target = tmp_path / "out" / "spring.zip"
    # The run left thumbnails to the gallery server; the zip, opened with no server, makes
    # them as it is written.
    assert not list(job_dir.glob("thumbs/*"))

    result = invoke("fetch", job_id, "--zip", str(target), "--json")

    assert result.exit_code == cli.EXIT_OK, result.output
    made = as_json(result)
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        # One folder named after the job; nothing of the pipeline's internals.
        assert all(name.startswith(f"{job_id}/") for name in names)
        inside = {name.removeprefix(f"{job_id}/") for name in names}
        assert inside >= REPORTS
        assert not any(name.startswith(("requests/", "manifests/")) for name in inside)
        images = sorted(name for name in inside if name.startswith("images/"))
        assert len(images) == 14
        assert any(name.startswith("gallery/items-") for name in inside)
        thumbs = sorted(name for name in inside if name.startswith("thumbs/"))
        assert [t.removeprefix("thumbs/").removesuffix(".jpg") for t in thumbs] == [
            i.removeprefix("images/").rsplit(".", 1)[0] for i in images
        ]
        for image, thumb in zip(images, thumbs, strict=True):
            zipped = archive.read(f"{job_id}/{thumb}")
            assert zipped == make_thumbnail(archive.read(f"{job_id}/{image}")), thumb
            assert (job_dir / thumb).read_bytes() == zipped  # stored for the gallery too
        for name in images + sorted(REPORTS):
            assert archive.read(f"{job_id}/{name}") == (job_dir / name).read_bytes(), name
        # Images are stored as they are (already compressed); text is deflated.
        first_image = archive.getinfo(f"{job_id}/{images[0]}")
        assert first_image.compress_type == zipfile.ZIP_STORED
        assert archive.getinfo(f"{job_id}/results.jsonl").compress_type == zipfile.ZIP_DEFLATED
    assert made == {
        "job_id": job_id,
        "zip": str(target),
        "files": len(names),
        "images": 14,
        "bytes": target.stat().st_size,
    }
    assert not list(target.parent.glob("*.part"))


@pytest.mark.browser
def test_the_gallery_renders_from_the_unpacked_zip(
    local_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.support.browser import assert_gallery_renders

    job_id = _run_examples(local_env)
    target = tmp_path / "job.zip"
    assert invoke("fetch", job_id, "--zip", str(target)).exit_code == cli.EXIT_OK
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(target) as archive:
        archive.extractall(unpacked)
    results = (unpacked / job_id / "results.jsonl").read_text().splitlines()
    succeeded = {
        json.loads(line)["key"] for line in results if json.loads(line)["status"] == "SUCCEEDED"
    }

    assert_gallery_renders(unpacked / job_id / "index.html", succeeded, tmp_path / "zip.png")


def test_fetch_zip_does_not_overwrite_an_existing_file(
    local_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    job_id = _run_examples(local_env)
    target = tmp_path / "keep.zip"
    target.write_bytes(b"mine")

    result = invoke("fetch", job_id, "--zip", str(target))

    assert result.exit_code == cli.EXIT_ERROR
    assert "keep.zip already exists" in result.stderr
    assert target.read_bytes() == b"mine"


@pytest.mark.parametrize("options", [[], ["--to", "here", "--zip", "here.zip"]])
def test_fetch_wants_exactly_one_of_to_and_zip(
    local_env: Path,  # noqa: F811
    options: list[str],
) -> None:
    result = invoke("fetch", "some-job", *options)

    assert result.exit_code == cli.EXIT_USAGE
    assert "--to" in result.output
    assert "--zip" in result.output


def test_fetch_zip_of_a_missing_job_is_one_error(
    local_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    result = invoke("fetch", "no-such-job", "--zip", str(tmp_path / "x.zip"))

    assert result.exit_code == cli.EXIT_ERROR
    assert "no job no-such-job" in result.stderr
    assert not (tmp_path / "x.zip").exists()
