"""A RabbitMQ node of a test's own, for what must not happen to the shared one.

Outages (stop and start the broker under running services), and later
configuration changes, need a broker nobody else uses. This starts the
machine's RabbitMQ installation as a separate node: its own name, free
ports, data, logs and Erlang cookie in a temporary directory, only the
AMQP listener (no plugins). Starting takes a few seconds.

`PrivateBroker(tls_dir=...)` listens for TLS only, with the certificates of
ops.pki in that directory: the client must present a certificate signed by
its CA, and logs in as the certificate's common name (EXTERNAL, no
password), with the users and permissions of shared.access loaded at boot.
`uri` then has no credentials; `tls_uri` is the same.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class PrivateBroker:
    def __init__(
        self,
        tls_dir: Path | None = None,
        vhost: str = "/",
        *,
        directory: Path | None = None,
        port: int | None = None,
        management_port: int | None = None,
        management_tls: bool = False,
    ):
        """`directory` keeps the node's data between starts (`make run`):
        its name is then fixed and close() leaves the data; by default
        both are temporary. `management_port` adds the management API on
        127.0.0.1 (a password user: add_management_user), over plain HTTP,
        or with `management_tls` (and `tls_dir`) over HTTPS with the
        broker's certificate."""
        if not (os.path.exists(SERVER) and os.path.exists(CTL)):
            raise RuntimeError(
                "RabbitMQ is not installed here (ops/scripts/ensure-broker.sh installs it)"
            )
        self.keep = directory is not None
        if directory is None:
            self.dir = Path(tempfile.mkdtemp(prefix="private-broker-"))
            self.node = f"ft_{uuid.uuid4().hex[:8]}@localhost"
        else:
            self.dir = directory.resolve()
            self.dir.mkdir(parents=True, exist_ok=True)
            self.node = "fintech_local@localhost"
        self.port = port or free_port()
        self.uri = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.tls_dir = tls_dir
        (self.dir / "home").mkdir(exist_ok=True)
        if tls_dir is None:
            conf = f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            plugins = "[]."
        else:
            from shared.access import definitions

            self.uri = f"amqps://127.0.0.1:{self.port}/{'' if vhost == '/' else vhost}"
            (self.dir / "definitions.json").write_text(json.dumps(definitions(vhost)))
            conf = "\n".join(
                [
                    "listeners.tcp = none",
                    f"listeners.ssl.default = 127.0.0.1:{self.port}",
                    f"ssl_options.cacertfile = {tls_dir / 'ca.pem'}",
                    f"ssl_options.certfile = {tls_dir / 'broker.pem'}",
                    f"ssl_options.keyfile = {tls_dir / 'broker.key'}",
                    "ssl_options.verify = verify_peer",
                    "ssl_options.fail_if_no_peer_cert = true",
                    "auth_mechanisms.1 = EXTERNAL",
                    "ssl_cert_login_from = common_name",
                    f"load_definitions = {self.dir / 'definitions.json'}",
                    "loopback_users = none",
                    "",
                ]
            )
            plugins = "[rabbitmq_auth_mechanism_ssl]."
        self.management_port = management_port
        self.management_scheme = "https" if tls_dir is not None and management_tls else "http"
        if management_port is not None and self.management_scheme == "https":
            conf += "\n".join(
                [
                    "management.ssl.ip = 127.0.0.1",
                    f"management.ssl.port = {management_port}",
                    f"management.ssl.cacertfile = {tls_dir / 'ca.pem'}",
                    f"management.ssl.certfile = {tls_dir / 'broker.pem'}",
                    f"management.ssl.keyfile = {tls_dir / 'broker.key'}",
                    "",
                ]
            )
        elif management_port is not None:
            conf += f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {management_port}\n"
        if management_port is not None:
            plugins = "[" + ", ".join(filter(None, [plugins[1:-2], "rabbitmq_management"])) + "]."
        (self.dir / "rabbitmq.conf").write_text(conf)
        (self.dir / "enabled_plugins").write_text(plugins + "\n")
        self.env = {
            **os.environ,
            "HOME": str(self.dir / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # A node or CLI that dies writes its crash dump here, not in the cwd.
            "ERL_CRASH_DUMP": str(self.dir / "erl_crash.dump"),
        }
        self.env.pop("RABBITMQ_ALLOW_INPUT", None)  # any value makes it interactive
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "PrivateBroker":
        self.process = subprocess.Popen(
            [SERVER],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=open(self.dir / "server.log", "ab"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_until_listening(timeout)
        return self

    def wait_until_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"the private broker exited: see {self.dir / 'server.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the private broker did not listen within {timeout} s")
            time.sleep(0.1)

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [CTL, "-q", "-n", self.node, *args],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def add_management_user(self, name: str, password: str) -> str:
        """An administrator of the management API; its base URL with the credentials."""
        self.ctl("add_user", name, password)
        self.ctl("set_user_tags", name, "administrator")
        return f"{self.management_scheme}://{name}:{password}@127.0.0.1:{self.management_port}"

    def stop_app(self) -> None:
        """An outage: the node closes every connection and refuses new ones."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait_until_listening()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.ctl("stop")
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def serve(argv=None) -> int:
    """`python -m ops.private_broker --tls-dir DIR --data DIR --port N`: a
    TLS-only node for `AMQP_TLS=on make run`, until SIGTERM or Ctrl-C."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=serve.__doc__.splitlines()[0])
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port", type=int, default=5671)
    args = parser.parse_args(argv)
    node = PrivateBroker(tls_dir=args.tls_dir.resolve(), directory=args.data, port=args.port)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        node.start()
        print(f"broker listening at {node.uri} (TLS only; logs in {node.dir / 'log'})", flush=True)
        while not stopping and node.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
