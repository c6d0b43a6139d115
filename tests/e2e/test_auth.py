"""Authentication: the `bearertokenauth` extension on receivers (401 / UNAUTHENTICATED,
counted) and exporters (the token added to outgoing requests), and mutual TLS
(`client_ca_file`) on a receiver with a weft exporter presenting its certificate.

Every refusal is checked with its status and counter; the token never shows in weft's
log or metrics."""

from __future__ import annotations

import subprocess
import time

import grpc
import pytest
import requests

from harness import app_result, assert_app_spans, otlp_receiver, run_app, wait_until
from otlp_support import (
    OtlpGrpcClient,
    make_trace_request,
    metric_sum,
    seq_of,
)

TOKEN = "tok-7f3a9c2e51d84b06"
AUTH_EXT = {"bearertokenauth/in": {"token": TOKEN}}


def receiver_cfg(grpc_port: int, http_port: int, sink_endpoint: str, auth: str | None,
                 extra_receivers: dict | None = None, tls: dict | None = None) -> dict:
    rcv = otlp_receiver(grpc_port=grpc_port, http_port=http_port)
    for proto in rcv["protocols"].values():
        if auth:
            proto["auth"] = {"authenticator": auth}
        if tls:
            proto["tls"] = tls
    receivers = {"otlp": rcv, **(extra_receivers or {})}
    return {
        "receivers": receivers,
        "exporters": {
            "otlp_grpc": {"endpoint": sink_endpoint, "tls": {"insecure": True},
                          "retry_on_failure": {"enabled": False}}
        },
        "extensions": dict(AUTH_EXT) if auth else {},
        "service": {
            "extensions": ["bearertokenauth/in"] if auth else [],
            "pipelines": {
                "traces": {"receivers": list(receivers), "exporters": ["otlp_grpc"]}
            },
        },
    }


def grpc_export(endpoint: str, nums: list[int], token: str | None,
                credentials: grpc.ChannelCredentials | None = None):
    channel = (grpc.secure_channel(endpoint, credentials,
                                   options=[("grpc.ssl_target_name_override", "localhost")])
               if credentials else grpc.insecure_channel(endpoint))
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    md = [("authorization", f"Bearer {token}")] if token else []
    try:
        stub.Export(make_trace_request(nums), metadata=md, timeout=5)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()
    finally:
        channel.close()


def http_export(url: str, nums: list[int], token: str | None, **kw) -> requests.Response:
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, data=make_trace_request(nums).SerializeToString(),
                         headers=headers, timeout=5, **kw)


def unauthenticated(w, transport: str) -> float:
    return metric_sum(w.metrics(), "weft_receiver_unauthenticated_requests",
                      receiver="otlp", transport=transport)


def assert_token_hidden(w) -> None:
    assert TOKEN not in w.log_text()
    assert TOKEN not in w.metrics_text()


def test_receivers_refuse_missing_and_wrong_tokens_and_count_them(weft, grpc_sink, ports):
    g, h = ports(2)
    sink = grpc_sink()
    w = weft(receiver_cfg(g, h, sink.endpoint, "bearertokenauth/in"))
    ep, url = f"127.0.0.1:{g}", f"http://127.0.0.1:{h}/v1/traces"

    code, details = grpc_export(ep, [1], None)
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "missing authorization header")
    code, details = grpc_export(ep, [2], "wrong")
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED,
                               "wrong credentials in the authorization header")
    assert grpc_export(ep, [3], TOKEN) == (grpc.StatusCode.OK, "")

    r = http_export(url, [4], None)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert r.text == "Unauthorized: missing authorization header\n"
    assert http_export(url, [5], "wrong").status_code == 401
    assert http_export(url, [6], TOKEN).status_code == 200

    assert sink.wait_for_spans(2, timeout=10)
    time.sleep(0.5)
    assert sorted(seq_of(r.item) for r in sink.spans()) == [3, 6]
    assert unauthenticated(w, "grpc") == 2
    assert unauthenticated(w, "http") == 2
    samples = w.metrics()
    assert metric_sum(samples, "otelcol_receiver_accepted_spans", receiver="otlp") == 2
    assert metric_sum(samples, "otelcol_receiver_refused_spans", receiver="otlp") == 0
    assert_token_hidden(w)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_real_sdk_client_with_a_token_works_end_to_end(weft, grpc_sink, ports, transport):
    g, h = ports(2)
    sink = grpc_sink()
    w = weft(receiver_cfg(g, h, sink.endpoint, "bearertokenauth/in"))
    endpoint = f"127.0.0.1:{g}" if transport == "grpc" else f"http://127.0.0.1:{h}/v1/traces"
    # The SDK's own way to send a header: OTEL_EXPORTER_OTLP_HEADERS.
    bad = run_app(transport, endpoint, env={"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20nope"})
    assert bad.returncode == 1, bad.stdout + bad.stderr
    out = app_result(run_app(transport, endpoint,
                             env={"OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{TOKEN}"}))
    assert sink.wait_for_spans(3, timeout=10)
    assert_app_spans(out, sink.spans())
    assert unauthenticated(w, transport) >= 1
    assert_token_hidden(w)


def test_other_receivers_take_the_same_authenticator(weft, grpc_sink, ports):
    g, h, dd, zk, jg = ports(5)
    sink = grpc_sink()
    auth = {"authenticator": "bearertokenauth/in"}
    extra = {
        "datadog": {"endpoint": f"127.0.0.1:{dd}", "auth": auth},
        "zipkin": {"endpoint": f"127.0.0.1:{zk}", "auth": auth},
        "jaeger": {"protocols": {"thrift_http": {"endpoint": f"127.0.0.1:{jg}", "auth": auth}}},
    }
    w = weft(receiver_cfg(g, h, sink.endpoint, "bearertokenauth/in", extra_receivers=extra))
    zipkin_span = [{"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c",
                    "name": "get", "timestamp": 1700000000000000, "duration": 10,
                    "localEndpoint": {"serviceName": "zk"}}]
    cases = [
        ("datadog", f"http://127.0.0.1:{dd}/v0.4/traces", b"\x90", "application/msgpack"),
        ("zipkin", f"http://127.0.0.1:{zk}/api/v2/spans", None, "application/json"),
        ("jaeger", f"http://127.0.0.1:{jg}/api/traces", b"", "application/x-thrift"),
    ]
    for name, url, body, ctype in cases:
        kw = {"json": zipkin_span} if body is None else {"data": body}
        r = requests.post(url, headers={"Content-Type": ctype}, timeout=5, **kw)
        assert r.status_code == 401, (name, r.status_code, r.text)
        r = requests.post(url, headers={"Content-Type": ctype, "Authorization": "Bearer x"},
                          timeout=5, **kw)
        assert r.status_code == 401, (name, r.status_code)
        assert metric_sum(w.metrics(), "weft_receiver_unauthenticated_requests",
                          receiver=name) == 2
    r = requests.post(cases[1][1], json=zipkin_span, timeout=5,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 202, r.text
    assert sink.wait_for_spans(1, timeout=10)
    assert sink.spans()[0].item.name == "get"
    assert_token_hidden(w)


def test_an_exporter_sends_the_token_and_a_wrong_one_is_refused(weft, grpc_sink, ports):
    g, h, a_in = ports(3)
    sink = grpc_sink()
    back = weft(receiver_cfg(g, h, sink.endpoint, "bearertokenauth/in"), name="back")

    def front(token: str, name: str):
        return weft({
            "receivers": {"otlp": otlp_receiver(grpc_port=a_in)},
            "exporters": {
                "otlp_grpc": {
                    "endpoint": f"127.0.0.1:{g}",
                    "tls": {"insecure": True},
                    "auth": {"authenticator": "bearertokenauth/out"},
                    "retry_on_failure": {"enabled": False},
                    "sending_queue": {"enabled": False},
                }
            },
            "extensions": {"bearertokenauth/out": {"token": token}},
            "service": {
                "extensions": ["bearertokenauth/out"],
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}},
            },
        }, name=name)

    good = front(TOKEN, "front-good")
    with OtlpGrpcClient(f"127.0.0.1:{a_in}") as c:
        assert c.export(make_trace_request([10, 11]))[0] == grpc.StatusCode.OK
    assert sink.wait_for_spans(2, timeout=10)
    assert_token_hidden(good)
    assert good.stop() == 0

    bad = front("not-the-token", "front-bad")
    with OtlpGrpcClient(f"127.0.0.1:{a_in}") as c:
        code, _ = c.export(make_trace_request([12]))
    assert code != grpc.StatusCode.OK
    assert wait_until(lambda: metric_sum(bad.metrics(), "otelcol_exporter_send_failed_spans",
                                         exporter="otlp_grpc") == 1, 10)
    assert unauthenticated(back, "grpc") == 1
    assert sorted(seq_of(r.item) for r in sink.spans()) == [10, 11]
    assert_token_hidden(back)
    assert_token_hidden(bad)


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for localhost / 127.0.0.1, a client certificate the CA
    signed, and a client certificate of another CA."""

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    for ca in ("ca", "rogue-ca"):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}")
    for name, ca, ext in (
        ("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "ca", "extendedKeyUsage=clientAuth"),
        ("rogue", "rogue-ca", "extendedKeyUsage=clientAuth"),
    ):
        (tmp_path / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return tmp_path


def test_mutual_tls_refuses_missing_and_foreign_client_certificates(weft, grpc_sink, ports, pki):
    g, h, a_in = ports(3)
    sink = grpc_sink()
    tls = {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
           "client_ca_file": str(pki / "ca.crt")}
    w = weft(receiver_cfg(g, h, sink.endpoint, None, tls=tls), name="mtls")
    ca = (pki / "ca.crt").read_bytes()

    def creds(name: str | None):
        if name is None:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        return grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(pki / f"{name}.key").read_bytes(),
            certificate_chain=(pki / f"{name}.crt").read_bytes(),
        )

    ep, url = f"127.0.0.1:{g}", f"https://127.0.0.1:{h}/v1/traces"
    assert grpc_export(ep, [1], None, creds(None))[0] == grpc.StatusCode.UNAVAILABLE
    assert grpc_export(ep, [2], None, creds("rogue"))[0] == grpc.StatusCode.UNAVAILABLE
    assert grpc_export(ep, [3], None, creds("client")) == (grpc.StatusCode.OK, "")
    with pytest.raises(requests.exceptions.SSLError):
        http_export(url, [4], None, verify=str(pki / "ca.crt"))
    with pytest.raises(requests.exceptions.SSLError):
        http_export(url, [5], None, verify=str(pki / "ca.crt"),
                    cert=(str(pki / "rogue.crt"), str(pki / "rogue.key")))
    r = http_export(url, [6], None, verify=str(pki / "ca.crt"),
                    cert=(str(pki / "client.crt"), str(pki / "client.key")))
    assert r.status_code == 200

    # A weft exporter presenting the client certificate.
    front = weft({
        "receivers": {"otlp": otlp_receiver(grpc_port=a_in)},
        "exporters": {"otlp_grpc": {
            "endpoint": f"localhost:{g}",
            "tls": {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "client.crt"),
                    "key_file": str(pki / "client.key")},
            "sending_queue": {"enabled": False},
        }},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}}},
    }, name="front")
    with OtlpGrpcClient(f"127.0.0.1:{a_in}") as c:
        assert c.export(make_trace_request([7]))[0] == grpc.StatusCode.OK
    assert sink.wait_for_spans(3, timeout=10)
    assert sorted(seq_of(r.item) for r in sink.spans()) == [3, 6, 7]
    samples = w.metrics()
    # grpc's client may try a refused handshake more than once.
    assert metric_sum(samples, "weft_receiver_tls_handshake_failures", transport="grpc") >= 2
    assert metric_sum(samples, "weft_receiver_tls_handshake_failures", transport="http") == 2
    assert front.stop() == 0


def test_a_reload_that_changes_the_token_revokes_the_old_one(weft, grpc_sink, ports):
    """Only the extension changes: the receiver that names it is rebuilt with it."""
    g, h = ports(2)
    sink = grpc_sink()
    cfg = receiver_cfg(g, h, sink.endpoint, "bearertokenauth/in")
    w = weft(cfg)
    ep = f"127.0.0.1:{g}"
    assert grpc_export(ep, [1], TOKEN) == (grpc.StatusCode.OK, "")
    new_token = "rotated-0c4e1b7a"
    cfg["extensions"]["bearertokenauth/in"] = {"token": new_token}
    w.write_config(cfg)
    assert wait_until(lambda: grpc_export(ep, [2], new_token)[0] == grpc.StatusCode.OK, 15, 0.2), (
        w.log_tail()
    )
    code, details = grpc_export(ep, [3], TOKEN)
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED,
                               "wrong credentials in the authorization header")
    assert sink.wait_for_spans(2, timeout=10)
    assert sorted(seq_of(r.item) for r in sink.spans()) == [1, 2]
    assert new_token not in w.log_text() and TOKEN not in w.log_text()
