"""TLS and mutual TLS of the runtime, configured with the caikit keys the README documents.

The test makes its own certificate authority with the ``openssl`` CLI: a server certificate for
127.0.0.1 / localhost and a client certificate, both signed by it. Each scenario starts one
real runtime whose config gets ``runtime.tls`` from an extra YAML file named in CONFIG_FILES
(the way caikit layers config files over runtime_config.yaml), and is checked with real gRPC
and HTTPS calls.
"""

# Standard
from dataclasses import dataclass
from typing import Callable, Dict, Optional
import pathlib
import ssl
import subprocess
import urllib.request

# Third Party
import grpc
import pytest
import yaml

# Local
from common import HOST
from example_tools.runtime_harness import (
    predict_callable,
    prepare_work_dir,
    RuntimeProcess,
    start_runtime,
)

from .conftest import encode_image, noise_image

OPENSSL = "/usr/bin/openssl"
# Extensions a strict verifier expects: a real CA, and leaf certificates limited to their role.
OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
# Unencrypted P-256 keys: fast to make, and accepted by gRPC and by Python's ssl.
NEW_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# A refused handshake reads as UNAVAILABLE; failing fast keeps the test short.
REFUSED_CALL_TIMEOUT_S = 10.0
# What a client sees when the server ends the TLS handshake (or never starts one); a runtime
# that is not listening gives ConnectionRefusedError instead, which must not pass for a refusal.
HANDSHAKE_REFUSED = (ssl.SSLError, ConnectionResetError)


@dataclass
class Pki:
    ca_cert: pathlib.Path
    server_key: pathlib.Path
    server_cert: pathlib.Path
    client_key: pathlib.Path
    client_cert: pathlib.Path


def _openssl(directory: pathlib.Path, arguments: str) -> None:
    result = subprocess.run(
        [OPENSSL, *arguments.split()], cwd=directory, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"openssl {arguments} failed:\n{result.stderr}"


def make_pki(directory: pathlib.Path) -> Pki:
    """A self-signed CA and a server and a client certificate signed by it, in ``directory``."""
    (directory / "openssl.cnf").write_text(OPENSSL_CONFIG)
    _openssl(
        directory,
        f"req -x509 -config openssl.cnf -extensions ca {NEW_KEY} "
        "-keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca",
    )
    for serial, name in enumerate(("server", "client"), start=1):
        _openssl(
            directory,
            f"req -new -config openssl.cnf {NEW_KEY} "
            f"-keyout {name}.key -out {name}.csr -subj /CN=test-{name}",
        )
        _openssl(
            directory,
            f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -set_serial {serial} -days 1 "
            f"-extfile openssl.cnf -extensions {name} -out {name}.crt",
        )
    return Pki(
        *(
            directory / name
            for name in ("ca.crt", "server.key", "server.crt", "client.key", "client.crt")
        )
    )


def ssl_context(pki: Pki, with_client_cert: bool) -> ssl.SSLContext:
    """An HTTPS client context that trusts the test CA (and presents the client certificate)."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if with_client_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def https_health(port: int, context: ssl.SSLContext) -> int:
    with urllib.request.urlopen(
        f"https://{HOST}:{port}/health", context=context, timeout=5
    ) as response:
        return response.status


def https_ready(context: ssl.SSLContext) -> Callable[[Dict[str, int]], bool]:
    """Readiness for start_runtime: HTTPS /health answers (serve() starts gRPC before HTTP)."""

    def ready(ports: Dict[str, int]) -> bool:
        try:
            return https_health(ports["http"], context) == 200
        except OSError:
            return False

    return ready


def grpc_channel(
    runtime: RuntimeProcess, pki: Pki, client_pki: Optional[Pki] = None
) -> grpc.Channel:
    """A channel that trusts ``pki``'s CA and presents ``client_pki``'s client certificate."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=client_pki.client_key.read_bytes() if client_pki else None,
        certificate_chain=client_pki.client_cert.read_bytes() if client_pki else None,
    )
    return grpc.secure_channel(f"{HOST}:{runtime.ports['grpc']}", credentials)


def assert_predict_refused(channel: grpc.Channel, jpeg: bytes) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        predict_callable(channel)(jpeg, timeout=REFUSED_CALL_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Connection refused" not in refused.value.details(), "the runtime is not listening"


def assert_http_refused(call: Callable[[], object]) -> None:
    with pytest.raises(OSError) as refused:
        call()
    # urllib wraps errors raised while connecting in URLError; unwrap to see the real one.
    error = getattr(refused.value, "reason", refused.value)
    assert isinstance(error, HANDSHAKE_REFUSED), repr(error)


def start_tls_runtime(
    work_dir: pathlib.Path,
    saved_model_dir: pathlib.Path,
    pki: Pki,
    client_ca: Optional[pathlib.Path] = None,
) -> RuntimeProcess:
    """Serve my_model with ``runtime.tls`` set; ``client_ca`` set turns on mutual TLS."""
    prepare_work_dir(work_dir, saved_model_dir)
    tls = {"server": {"key": str(pki.server_key), "cert": str(pki.server_cert)}}
    if client_ca is not None:
        tls["client"] = {"cert": str(client_ca)}
    config_file = work_dir / "tls_config.yaml"
    config_file.write_text(yaml.safe_dump({"runtime": {"tls": tls}}))
    return start_runtime(
        work_dir,
        [],
        extra_env={"CONFIG_FILES": str(config_file)},
        ready_check=https_ready(ssl_context(pki, with_client_cert=client_ca is not None)),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger_pki(tmp_path_factory) -> Pki:
    """Certificates from another CA, which the runtime must not accept."""
    return make_pki(tmp_path_factory.mktemp("stranger_pki"))


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return encode_image(noise_image(64, 48))


@pytest.fixture(scope="class")
def tls_runtime(tmp_path_factory, saved_model_dir, pki):
    runtime = start_tls_runtime(tmp_path_factory.mktemp("tls"), saved_model_dir, pki)
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="class")
def mtls_runtime(tmp_path_factory, saved_model_dir, pki):
    runtime = start_tls_runtime(
        tmp_path_factory.mktemp("mtls"), saved_model_dir, pki, client_ca=pki.ca_cert
    )
    try:
        yield runtime
    finally:
        runtime.stop()


class TestTls:
    def test_grpc_predict_over_tls_with_the_ca_as_root(self, tls_runtime, pki, jpeg):
        with grpc_channel(tls_runtime, pki) as channel:
            result = predict_callable(channel)(jpeg, threshold=0.0)
        assert result.producer_id.name

    def test_insecure_grpc_channel_is_refused(self, tls_runtime, jpeg):
        with grpc.insecure_channel(f"{HOST}:{tls_runtime.ports['grpc']}") as channel:
            assert_predict_refused(channel, jpeg)

    def test_https_health_with_the_ca(self, tls_runtime, pki):
        context = ssl_context(pki, with_client_cert=False)
        assert https_health(tls_runtime.ports["http"], context) == 200

    def test_plain_http_is_refused(self, tls_runtime):
        url = f"http://{HOST}:{tls_runtime.ports['http']}/health"
        assert_http_refused(lambda: urllib.request.urlopen(url, timeout=5))

    def test_metrics_stay_plain_http(self, tls_runtime):
        # Documented in the README: runtime.tls does not cover the Prometheus endpoint.
        url = f"http://{HOST}:{tls_runtime.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200


class TestMutualTls:
    def test_grpc_without_client_cert_is_refused(self, mtls_runtime, pki, jpeg):
        with grpc_channel(mtls_runtime, pki) as channel:
            assert_predict_refused(channel, jpeg)

    def test_grpc_client_cert_from_another_ca_is_refused(
        self, mtls_runtime, pki, stranger_pki, jpeg
    ):
        with grpc_channel(mtls_runtime, pki, client_pki=stranger_pki) as channel:
            assert_predict_refused(channel, jpeg)

    def test_grpc_predict_with_client_cert(self, mtls_runtime, pki, jpeg):
        with grpc_channel(mtls_runtime, pki, client_pki=pki) as channel:
            result = predict_callable(channel)(jpeg, threshold=0.0)
        assert result.producer_id.name

    def test_https_without_client_cert_is_refused(self, mtls_runtime, pki):
        context = ssl_context(pki, with_client_cert=False)
        assert_http_refused(lambda: https_health(mtls_runtime.ports["http"], context))

    def test_https_with_client_cert(self, mtls_runtime, pki):
        context = ssl_context(pki, with_client_cert=True)
        assert https_health(mtls_runtime.ports["http"], context) == 200
