"""`nameko shell` as the operator identity: `python -m shared.shell`.

nameko's own shell builds its RPC client from config.yml alone; this one
adds the broker access of shared.broker (TLS, the operator's certificate,
`user_id` on every request), so the privileged RPCs that admit only
operators (`n.rpc.auth.grant_role(...)`) answer it. Without certificates
it is nameko's shell on AMQP_URI.
"""

import eventlet

eventlet.monkey_patch()  # before anything imports socket

import argparse  # noqa: E402
import sys  # noqa: E402
from types import ModuleType  # noqa: E402

import yaml  # noqa: E402
from nameko.cli.main import setup_yaml_parser  # noqa: E402
from nameko.cli.shell import ShellRunner  # noqa: E402

from shared import broker  # noqa: E402
from shared.rpc import cluster_rpc  # noqa: E402


def helper(config: dict) -> ModuleType:
    module = ModuleType("nameko")
    module.__doc__ = "n.rpc.<service>.<method>(...) as the operator; n.disconnect() ends it."
    proxy = cluster_rpc(config)
    module.rpc = proxy.start()
    module.config = config
    module.disconnect = proxy.stop
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yml")
    parser.add_argument("--interface", choices=("bpython", "ipython", "plain"))
    args = parser.parse_args(argv)
    setup_yaml_parser()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    access = broker.access(broker.OPERATOR, config.get("AMQP_URI"))
    config = access.nameko_config(config)
    banner = f"Python {sys.version} shell\nBroker: {access.uri} as {access.identity}"
    ShellRunner(banner, {"n": helper(config)}).start_shell(name=args.interface)


if __name__ == "__main__":
    main()
