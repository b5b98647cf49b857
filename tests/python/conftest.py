"""A client we did not write: grpcio from PyPI, stubs generated from proto/ with grpcio-tools.

At session start the stubs are generated into a temporary directory that goes on sys.path
(so test modules import `prorata.v1.*_pb2` directly), and a real `prorata serve` is started
on a free loopback port with a fresh SQLite file. It is stopped with SIGTERM at the end.

Environment:
  PRORATA_BIN  the server binary (default: <repo>/target/debug/prorata)
"""

import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
STARTUP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 15.0

_gen_dir = None


def _generate_stubs(out: Path) -> None:
    """python -m grpc_tools.protoc over every proto in proto/, into `out`."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    assert protos, f"no .proto files under {PROTO_DIR}"
    # google/protobuf/timestamp.proto ships inside grpcio-tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    done = subprocess.run(cmd, cwd=PROTO_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed ({done.returncode}):\n{done.stderr}")
    # Regular packages, so nothing else named `prorata` on sys.path can shadow them.
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        if d != out:
            (d / "__init__.py").touch()


def pytest_sessionstart(session):
    global _gen_dir
    _gen_dir = Path(tempfile.mkdtemp(prefix="prorata-pystubs-"))
    _generate_stubs(_gen_dir)
    sys.path.insert(0, str(_gen_dir))


def pytest_sessionfinish(session, exitstatus):
    if _gen_dir is not None:
        shutil.rmtree(_gen_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        text = "(no log)"
    return f"--- last lines of {path} ---\n{text}"


def _wait_serving(addr: str, proc: subprocess.Popen, log: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = None
    with grpc.insecure_channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prorata exited with {proc.returncode} during startup:\n{_tail(log)}"
                )
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as e:
                last = f"{e.code()}: {e.details()}"
            time.sleep(0.1)
    raise RuntimeError(
        f"prorata not SERVING on {addr} after {STARTUP_TIMEOUT_S}s (last: {last}):\n{_tail(log)}"
    )


@pytest.fixture(scope="session")
def server_addr():
    """host:port of a real `prorata serve` with a fresh SQLite database."""
    binary = Path(os.environ.get("PRORATA_BIN", REPO_ROOT / "target" / "debug" / "prorata"))
    if not os.access(binary, os.X_OK):
        pytest.fail(
            f"no server binary at {binary}: cargo build --bin prorata, or set PRORATA_BIN",
            pytrace=False,
        )
    workdir = Path(tempfile.mkdtemp(prefix="prorata-pyserver-"))
    addr = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ)
    # Nothing from the caller's environment may point the server at another store or file.
    for key in ("PRORATA_CONFIG", "PRORATA_DATABASE_URL"):
        env.pop(key, None)
    env["PRORATA_GRPC_ADDR"] = addr
    env["PRORATA_SQLITE_PATH"] = str(workdir / "p.db")
    log = workdir / "server.log"
    with open(log, "wb") as out:
        # cwd is the temp dir, so no ./prorata.toml is picked up either.
        proc = subprocess.Popen(
            [str(binary), "serve"], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_serving(addr, proc, log)
        yield addr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(
                    f"prorata ignored SIGTERM for {SHUTDOWN_TIMEOUT_S}s:\n{_tail(log)}"
                )
        code = proc.returncode
        if code != 0:
            raise RuntimeError(f"prorata exited with {code} after SIGTERM:\n{_tail(log)}")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def channel(server_addr):
    with grpc.insecure_channel(server_addr) as ch:
        grpc.channel_ready_future(ch).result(timeout=STARTUP_TIMEOUT_S)
        yield ch
