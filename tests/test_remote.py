"""Models read by object-store URL (issue 19): s3:// against a real S3-compatible server.

moto's server runs on 127.0.0.1 in a thread (ThreadedMotoServer): wwaudit talks to it through
fsspec/s3fs and botocore over HTTP exactly as to AWS, with the endpoint from AWS_ENDPOINT_URL.
Nothing of wwaudit is mocked. The model is an onnxruntime-genai layout decoder whose weights all
live in external data, read by byte range.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import onnx
import pytest

from genai_layout import DecoderConfig, write_decoder
from wwaudit.cli.main import main

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

REPO = Path(__file__).resolve().parents[1]
BUCKET = "models"
ARGS = ["--quiet", "--fast", "--fail-on", "never"]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """A client of the server, the environment pointing wwaudit at it, fresh fsspec instances."""
    import s3fs

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=endpoint)
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    yield client
    s3fs.S3FileSystem.clear_instance_cache()


def _upload(client, folder: Path, prefix: str, files: tuple[str, ...] = ("model.onnx", "model.onnx.data")) -> str:
    for name in files:
        client.upload_file(str(folder / name), BUCKET, f"{prefix}/{name}")
    return f"s3://{BUCKET}/{prefix}/model.onnx"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_model_on_s3_gives_the_json_of_the_local_copy(tmp_path: Path, s3, workers: str) -> None:
    # large enough (eigen work above scheduler.PARALLEL_MIN_COST) for 2 workers to be processes
    # that open their own connections
    local = write_decoder(
        tmp_path / "m", DecoderConfig(tied=True, hidden=512, intermediate=1024, vocab=1024, heads=8, kv_heads=4)
    )
    url = _upload(s3, tmp_path / "m", f"same-{workers}")
    a, b = tmp_path / "local.json", tmp_path / "s3.json"
    assert main([str(local), "--json", str(a), "--workers", workers, *ARGS]) == 0
    assert main([url, "--json", str(b), "--workers", workers, *ARGS]) == 0
    assert a.read_bytes() == b.read_bytes()  # same machine, same run: the documents are identical
    doc = json.loads(b.read_text())
    assert doc["model"]["external_data"] is True
    assert sum(layer["status"] == "ok" for layer in doc["layers"]) == 15  # embedding (tied head) + 2 x 7 projections


def test_external_data_is_read_by_range_not_whole(tmp_path: Path, s3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of the data object is exactly one tensor's byte range, never the whole object."""
    import s3fs

    write_decoder(tmp_path / "m", DecoderConfig())
    url = _upload(s3, tmp_path / "m", "ranges")
    ranges = set()
    for tensor in onnx.load(str(tmp_path / "m" / "model.onnx"), load_external_data=False).graph.initializer:
        info = {entry.key: entry.value for entry in tensor.external_data}
        ranges.add((int(info["offset"]), int(info["offset"]) + int(info["length"])))
    reads: list[tuple[str, int | None, int | None]] = []
    original = s3fs.S3FileSystem._cat_file

    async def spy(self, path, version_id=None, start=None, end=None):
        reads.append((path, start, end))
        return await original(self, path, version_id=version_id, start=start, end=end)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", spy)
    assert main([url, "--workers", "1", *ARGS]) == 0
    data_reads = [(s, e) for p, s, e in reads if p.endswith(".data")]
    assert len(data_reads) >= 15 and set(data_reads) <= ranges


def _escaping_model(folder: Path, location: str) -> None:
    write_decoder(folder, DecoderConfig(layers=1))
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    (folder / "model.onnx").write_bytes(model.SerializeToString())


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("../victim/model.onnx.data", "climbs out of the model's folder"),
        ("/models/victim/model.onnx.data", "is an absolute path"),
        ("sub/../../victim/model.onnx.data", "climbs out of the model's folder"),
        ("%2e%2e/victim/model.onnx.data", "which a URL would interpret"),
        ("model.onnx.data?versionId=1", "which a URL would interpret"),
    ],
)
def test_a_location_escaping_the_prefix_is_refused(tmp_path: Path, s3, capsys, location: str, message: str) -> None:
    write_decoder(tmp_path / "victim", DecoderConfig(layers=1))
    _upload(s3, tmp_path / "victim", "victim")  # a real object the location points at
    _escaping_model(tmp_path / "evil", location)
    url = _upload(s3, tmp_path / "evil", "evil")
    assert main([url, *ARGS]) == 2
    assert message in _one_line_error(capsys)


def test_missing_keys_are_one_line(tmp_path: Path, s3, capsys) -> None:
    write_decoder(tmp_path / "m", DecoderConfig(layers=1))
    url = _upload(s3, tmp_path / "m", "no-data", files=("model.onnx",))
    assert main([url, *ARGS]) == 2
    assert "'model.onnx.data' not found beside the model" in _one_line_error(capsys)
    assert main([f"s3://{BUCKET}/nothing-here/model.onnx", *ARGS]) == 2
    assert "no such object" in _one_line_error(capsys)
    assert main([f"s3://{BUCKET}/no-data", *ARGS]) == 2  # a prefix, not an object
    assert "not an object" in _one_line_error(capsys)


def test_bad_credentials_are_one_line(tmp_path: Path, s3, endpoint: str, monkeypatch, capsys) -> None:
    write_decoder(tmp_path / "m", DecoderConfig(layers=1))
    url = _upload(s3, tmp_path / "m", "auth")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    _moto_auth(endpoint, "0")  # from now on the server checks every request's signature
    try:
        assert main([url, *ARGS]) == 2
    finally:
        _moto_auth(endpoint, "inf")
    err = _one_line_error(capsys)
    assert "access denied" in err or "InvalidAccessKeyId" in err


def _moto_auth(endpoint: str, count: str) -> None:
    """moto's own switch: authenticate every request after `count` unauthenticated ones."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_unreachable_endpoint_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "wwaudit", f"s3://{BUCKET}/m/model.onnx", "--quiet"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "cannot be read" in proc.stderr and "Could not connect" in proc.stderr


def test_without_the_backend_a_url_is_one_line(capsys) -> None:
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    assert main(["gs://bucket/model.onnx", *ARGS]) == 2
    assert "pip install 'wwaudit[remote]'" in _one_line_error(capsys)


def test_without_fsspec_a_url_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec now raises ImportError
    assert main(["s3://bucket/model.onnx", *ARGS]) == 2
    err = _one_line_error(capsys)
    assert "needs fsspec" in err and "wwaudit[remote]" in err


def test_file_url_keeps_the_local_checks(tmp_path: Path, capsys) -> None:
    """file:// is read as the local path, so symbolic links are still refused."""
    write_decoder(tmp_path / "m", DecoderConfig(layers=1))
    assert main([(tmp_path / "m" / "model.onnx").as_uri(), *ARGS]) == 0
    _escaping_model(tmp_path / "e", "../m/model.onnx.data")
    assert main([(tmp_path / "e" / "model.onnx").as_uri(), *ARGS]) == 2
    assert "climbs out" in _one_line_error(capsys)


def test_cluster_workers_read_the_model_from_s3(tmp_path: Path, s3) -> None:
    """Dask workers with no shared file system: each fetches its own tensors from the store."""
    pytest.importorskip("distributed")
    local = write_decoder(tmp_path / "m", DecoderConfig(layers=1))
    url = _upload(s3, tmp_path / "m", "cluster")
    a, b = tmp_path / "local.json", tmp_path / "cluster.json"
    assert main([str(local), "--json", str(a), "--workers", "1", *ARGS]) == 0
    (tmp_path / "m" / "model.onnx.data").unlink()  # the workers cannot fall back on a local copy
    assert main([url, "--json", str(b), "--cluster", "local:1", *ARGS]) == 0
    assert a.read_bytes() == b.read_bytes()
