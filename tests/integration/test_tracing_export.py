"""Spans leave a process by OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

No collector is installable here, so the test is one: an HTTP server that
takes what an OpenTelemetry collector takes on /v1/traces (protobuf
ExportTraceServiceRequest) and decodes it with the specification's own
message definitions. A child process sets tracing up as a service does
(shared.tracing.setup), makes a span the way an entrypoint does, with a
parent from a traceparent, and flushes.
"""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
from opentelemetry import trace
from shared import tracing

assert tracing.setup("risk") is True
parent = tracing.context_of("00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
span = tracing.tracer().start_span("risk.handle_transfer_requested", context=parent,
                                   attributes={"transfer_id": "t-1"})
span.end()
trace.get_tracer_provider().force_flush()
"""


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_spans_go_to_the_otlp_endpoint_when_one_is_set(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
            "TRACES_DIR": str(tmp_path / "unused"),  # the collector wins over files
        }
        subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, check=True, timeout=60)
    finally:
        server.shutdown()
    paths = [path for path, _ in Collector.received]
    assert paths == ["/v1/traces"], paths
    request = ExportTraceServiceRequest.FromString(Collector.received[0][1])
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "risk"
    [span] = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.name == "risk.handle_transfer_requested"
    assert span.trace_id.hex() == "ab" * 16
    assert span.parent_span_id.hex() == "cd" * 8
    assert not (tmp_path / "unused").exists()
