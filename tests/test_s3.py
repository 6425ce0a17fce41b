"""A real S3 API on loopback: moto's server, reached through s3fs as any S3 store would be.

Credentials and the endpoint come from the standard AWS environment variables
(``AWS_ENDPOINT_URL`` included), as they would for MinIO; builds use two worker processes, which
upload their parts themselves.
"""

from __future__ import annotations

import json
import os
import uuid

import boto3
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import comparable, local_files, stop_at_call
from moto.server import ThreadedMotoServer

from imgshard.build import build
from imgshard.cli import cli
from imgshard.config import BuildConfig
from imgshard.errors import ImgshardError
from imgshard.reader import ShardReader

CONFIG = BuildConfig(size=(12, 12), shard_size=4)
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 and the AWS variables that point clients at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    patch = pytest.MonkeyPatch()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                        "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        patch.setenv(name, value)
    yield f"http://{host}:{port}"
    patch.undo()
    server.stop()


@pytest.fixture
def bucket(s3_endpoint):
    """A new, empty bucket; returns its s3:// URL and a boto3 client for checking on it."""
    name = f"imgshard-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    return f"s3://{name}", client


def objects(client, url: str) -> dict[str, bytes]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {item["Key"].rsplit("/", 1)[-1]: client.get_object(Bucket=bucket, Key=item["Key"])
            ["Body"].read() for item in listed}


@pytest.fixture
def src(make_class_folders, tmp_path):
    root = make_class_folders({"cat": 6, "dog": 5, "owl": 5}, flat=False)
    (tmp_path / "src" / "owl" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def upload_folder(client, folder: str, url: str) -> None:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    for parent, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(parent, name), folder).replace(os.sep, "/")
            client.upload_file(os.path.join(parent, name), bucket, f"{prefix}/{rel}")


def test_build_from_a_folder_to_s3_matches_a_local_build(src, tmp_path, bucket):
    url, client = bucket
    build(src, str(tmp_path / "local"), CONFIG, workers=2)
    result = CliRunner().invoke(cli, ["build", src, f"{url}/shards", "--size", "12",
                                      "--shard-size", "4", "--workers", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    stored = objects(client, f"{url}/shards")
    assert comparable(stored) == comparable(local_files(tmp_path / "local"))
    assert not any(name.startswith(".") for name in stored)  # no part, temp or progress left


def test_build_from_s3_to_a_folder_matches_a_local_build(src, tmp_path, bucket):
    url, client = bucket
    upload_folder(client, src, f"{url}/raw")
    build(src, str(tmp_path / "local"), CONFIG, workers=2)
    manifest = build(f"{url}/raw", str(tmp_path / "from-s3"), CONFIG, workers=2).manifest
    assert comparable(local_files(tmp_path / "from-s3")) == comparable(local_files(tmp_path / "local"))
    assert manifest.source == f"{url}/raw"
    assert [s.path for s in manifest.skipped] == ["owl/truncated.png"]


def test_inspect_verify_and_preview_on_the_bucket(src, tmp_path, bucket):
    url, client = bucket
    build(src, f"{url}/shards", CONFIG, workers=2)
    runner = CliRunner()
    previewed = runner.invoke(cli, ["preview", f"{url}/shards", "-o", str(tmp_path / "grid.png"),
                                    "--per-class", "2"])
    assert previewed.exit_code == 0, previewed.output
    assert (tmp_path / "grid.png").stat().st_size > 0
    inspected = runner.invoke(cli, ["inspect", f"{url}/shards", "--json"])
    assert inspected.exit_code == 0, inspected.output
    summary = json.loads(inspected.output)
    assert summary["splits"]["train"]["num_samples"] == 16
    assert summary["splits"]["train"]["bytes"] == sum(
        len(data) for name, data in objects(client, f"{url}/shards").items()
        if name.endswith(".npy"))
    verified = runner.invoke(cli, ["verify", f"{url}/shards", "--deep", "--quiet"])
    assert verified.exit_code == 0 and verified.output.startswith("OK"), verified.output
    bucket_name, _, _ = url[len("s3://"):].partition("/")
    key = "shards/train-00002.npy"
    data = bytearray(client.get_object(Bucket=bucket_name, Key=key)["Body"].read())
    data[200] ^= 0x01
    client.put_object(Bucket=bucket_name, Key=key, Body=bytes(data))
    damaged = runner.invoke(cli, ["verify", f"{url}/shards", "--quiet"])
    assert damaged.exit_code == 1
    assert "train-00002.npy: checksum does not match" in damaged.output


def test_a_reader_epoch_from_the_bucket_is_exactly_once(src, tmp_path, bucket):
    url, _ = bucket
    build(src, f"{url}/shards", CONFIG, workers=2)
    build(src, str(tmp_path / "local"), CONFIG, workers=1)
    reader = ShardReader(f"{url}/shards", batch_size=5, window=2, seed=3,
                         cache_dir=str(tmp_path / "cache"))
    local = ShardReader(str(tmp_path / "local"), batch_size=5, window=2, seed=3)
    seen = [(image.tobytes(), int(label)) for x, y in reader for image, label in zip(x, y)]
    stored = [(image.tobytes(), int(label)) for x, y in local for image, label in zip(x, y)]
    assert len(seen) == 16 and sorted(seen) == sorted(stored)
    assert seen == stored  # the same order too: it depends on (seed, epoch) only
    assert reader.cache.downloaded == len({d for s in reader.shards
                                           for d in (s.sha256, s.labels_sha256)})
    again = ShardReader(f"{url}/shards", batch_size=5, window=2, seed=3,
                        cache_dir=str(tmp_path / "cache"))
    assert sum(len(x) for x, _ in again) == 16 and again.cache.downloaded == 0  # cached


def test_storage_options_reach_s3fs_and_never_show(src, tmp_path, bucket, monkeypatch):
    url, client = bucket
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    options = ["--storage-option", f"endpoint_url={endpoint}",
               "--storage-option", "key=AKIAIMGSHARDTEST", "--storage-option", f"secret={SECRET}"]
    runner = CliRunner()
    built = runner.invoke(cli, ["build", src, f"{url}/shards", "--size", "12", *options])
    assert built.exit_code == 0, built.output
    assert SECRET not in built.output
    for name, data in objects(client, f"{url}/shards").items():
        assert SECRET.encode() not in data and b"AKIAIMGSHARDTEST" not in data, name
    listed = runner.invoke(cli, ["inspect", f"{url}/shards", *options])
    assert listed.exit_code == 0 and SECRET not in listed.output
    wrong = runner.invoke(cli, ["inspect", f"{url}/shards", "--storage-option",
                                "endpoint_url=http://127.0.0.1:9", "--storage-option",
                                f"secret={SECRET}", "--storage-option", "key=AKIAIMGSHARDTEST"])
    assert wrong.exit_code == 1
    assert len(wrong.output.strip().splitlines()) == 1 and "Traceback" not in wrong.output
    assert SECRET not in wrong.output


def test_a_missing_bucket_is_an_error_and_is_not_created(src, tmp_path, s3_endpoint):
    name = f"imgshard-missing-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    result = CliRunner().invoke(cli, ["build", src, f"s3://{name}/shards", "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().endswith("The specified bucket does not exist")
    assert len(result.output.strip().splitlines()) == 1
    assert name not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    with pytest.raises(ImgshardError, match="does not exist"):
        ShardReader(f"s3://{name}/shards", cache_dir=str(tmp_path))


def test_a_password_in_a_url_never_shows(src, bucket):
    url, _ = bucket
    result = CliRunner().invoke(cli, ["build", f"s3://reader:PW-{SECRET}@{url[5:]}/raw", "out"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert SECRET not in result.output and "PW-" not in result.output


def test_resume_on_s3_finishes_an_interrupted_build(src, tmp_path, bucket):
    url, client = bucket
    config = BuildConfig(size=(12, 12), shard_size=2)
    build(src, str(tmp_path / "local"), config, workers=1)
    with pytest.raises(KeyboardInterrupt):
        build(src, f"{url}/shards", config, workers=1, progress=stop_at_call(5))
    assert "manifest.json" not in objects(client, f"{url}/shards")
    result = CliRunner().invoke(cli, ["build", src, f"{url}/shards", "--size", "12",
                                      "--shard-size", "2", "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert comparable(objects(client, f"{url}/shards")) == comparable(local_files(tmp_path / "local"))
    assert np.load(os.path.join(tmp_path, "local", "train-00000.npy")).shape == (2, 12, 12, 3)


def test_dask_workers_upload_their_parts_to_the_bucket(src, tmp_path, bucket):
    url, client = bucket
    build(src, str(tmp_path / "local"), CONFIG, workers=2)
    build(src, f"{url}/shards", CONFIG, workers=2, executor="dask", scheduler="local")
    stored = objects(client, f"{url}/shards")
    assert comparable(stored) == comparable(local_files(tmp_path / "local"))
    assert not any(name.startswith(".") for name in stored)
