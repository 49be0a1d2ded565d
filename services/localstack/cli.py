"""`adrec-local` / `python -m services.localstack`: run the platform locally.

    up       start Kafka, Milvus (and Redis) and the services; Ctrl-C stops everything
    stop     stop processes left behind by a crashed `up` (pid files in the run dir)
    status   show what a running `up` started
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from services.common.logging import configure_logging

from .ports import port_open
from .settings import LocalStackSettings
from .supervisor import Supervisor, stop_stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adrec-local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the local platform and wait for Ctrl-C")
    up.add_argument("--redis", action="store_true", help="also start redis-server")
    up.add_argument("--infra-only", action="store_true", help="start only Kafka/Milvus/Redis")
    up.add_argument("--fresh", action="store_true", help="wipe the run directory's data first")
    sub.add_parser("stop", help="stop processes left by an earlier run")
    sub.add_parser("status", help="show the running components")
    args = parser.parse_args(argv)
    configure_logging("localstack", "WARNING", json_output=False)

    overrides: dict[str, object] = {}
    if args.cmd == "up":
        if args.redis:
            overrides["redis"] = True
        if args.infra_only:
            overrides["services"] = False
        if args.fresh:
            overrides["fresh"] = True
    settings = LocalStackSettings(**overrides)

    if args.cmd == "stop":
        n = stop_stale(settings.run_dir) if settings.run_dir.exists() else 0
        print(f"stopped {n} process(es)")
        return 0
    if args.cmd == "status":
        state_file = settings.run_dir / "state.json"
        if not state_file.exists():
            print("not running")
            return 1
        for c in json.loads(state_file.read_text())["components"]:
            port = int(c["address"].rsplit(":", 1)[1])
            print(f"  {c['name']:<10} {c['address']:<28} pid {c['pid']}  "
                  f"{'up' if port_open(port) else 'DOWN'}")
        return 0

    sup = Supervisor(settings, echo=lambda m: print(m, flush=True))
    print(f"adrec local platform (run dir {settings.run_dir})", flush=True)
    try:
        endpoints = sup.up()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while starting: up() stopped what had started
        print("interrupted while starting; stopped.", flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - report, everything started was stopped by up()
        logging.getLogger(__name__).debug("start failed", exc_info=True)
        print(f"failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    print("ready:\n" + sup.table(), flush=True)
    print("environment for services and clients:", flush=True)
    for k, v in endpoints.items():
        print(f"  export {k}={v}", flush=True)
    print("Ctrl-C to stop.", flush=True)
    reason = sup.wait()
    print(f"stopping ({reason}) ...", flush=True)
    sup.down()
    print("stopped.", flush=True)
    return 0 if reason == "signal" else 1


if __name__ == "__main__":
    sys.exit(main())
